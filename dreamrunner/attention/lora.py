"""Region-gated LoRA: y = W x + sum_k s_k * m_k * B_k A_k x, each LoRA gated to its own tokens.

peft adds a LoRA delta to every token; SR3AI needs each subject / motion prior to act only on the tokens
of the prompts bound to it (their text tokens and the union of their video regions). The gate is a per-token
scalar, so it is applied in the rank space: m_k * (B_k A_k x) = B_k (m_k * A_k x). All LoRAs on a linear
are stacked, [A_1; ..; A_K] and [B_1 .. B_K], so a step costs two thin matmuls per linear however many
LoRAs are active, plus one add into the base output. The delta is added by a forward hook on the model's own
`nn.Linear`, leaving the module tree and its state-dict keys untouched.

Weights load from the diffusers CogVideoX LoRA layout (docs/architecture.md), the file peft training and
`CogVideoXPipeline.save_lora_weights` write: `transformer.transformer_blocks.{i}.{module}.lora_A.weight` /
`lora_B.weight` (Wan's: `transformer.blocks.{i}...`, `WanPipeline.save_lora_weights`), rank and alpha in the `lora_adapter_metadata` safetensors metadata. Block placement is the
released code's: motion priors on 0-based blocks 0, 2, 4, ..., subject priors on 1, 3, 5, ...; files record
it under `dreamrunner_block_parity`. An imported outside LoRA (dreamrunner.priors.imports) records "any" there:
it lives on the blocks its keys name, whatever their parity, and is gated to its entities' regions like any prior.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DreamRunnerError
from ..regions import RegionPlan

KINDS = ("subject", "motion")
# CogVideoX names its blocks `transformer_blocks`, Wan `blocks`.
_KEY = re.compile(r"^(?:transformer\.)?((?:transformer_)?blocks\.(\d+)\.(.+))\.lora_([AB])\.weight$")
# The released code counts blocks from 1 and puts its temporal (motion) LoRAs on the odd ones and its spatial
# (subject) LoRAs on the even ones: 0-based, motion on 0, 2, 4, ... and subject on 1, 3, 5, ...
BLOCK_PARITY = {"motion": 0, "subject": 1}
PARITY_NAMES = ("even", "odd")  # 0-based
PARITY_METADATA_KEY = "dreamrunner_block_parity"
# The record of an imported LoRA on blocks of both parities (all blocks, or the ones its author chose).
ANY_PARITY = "any"
# The card key of a two-expert (Wan 2.2 A14B) prior: its low-noise expert's file, beside the high-noise one.
LOW_NOISE_CARD_KEY = "low_noise_file"
# Its experts, as its card's `experts` entries name them: (expert, the pipeline's transformer), high noise first.
CARD_EXPERTS = (("high-noise", "transformer"), ("low-noise", "transformer_2"))


class LoRAFileError(DreamRunnerError, ValueError):
    """A LoRA file that cannot be read as a subject or motion prior."""


def read_lora_file(path: str | Path, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A prior file's tensors (name -> tensor, on the CPU; none when `tensors` is False) and its safetensors
    metadata. The one door priors come in by, in both region-control modes.

    Only safetensors files are read: a pickled checkpoint (.bin, .pt, .pth, .ckpt) can run code when it is
    loaded, and a prior may come from someone else's project. Raises LoRAFileError for another suffix, a
    missing file, or a file that does not parse as safetensors (whatever its name).
    """
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        raise LoRAFileError(f"{path.name}: priors are loaded from .safetensors files only; a pickled checkpoint "
                            f"({path.suffix or 'no suffix'}) can run code when loaded and is refused")
    if not path.is_file():
        raise LoRAFileError(f"LoRA file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            found = {key: f.get_tensor(key) for key in f.keys()} if tensors else {}
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise LoRAFileError(f"{path.name}: not a readable safetensors file ({error})") from error
    return found, metadata


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"prior kind must be 'subject' or 'motion', got {kind!r}")
    return kind


def block_parity(kind: str) -> str:
    """"even" or "odd": the 0-based parity of the blocks a prior of this kind lives on (what files record)."""
    return PARITY_NAMES[BLOCK_PARITY[_check_kind(kind)]]


def block_parity_ok(kind: str, block: int) -> bool:
    """Motion priors live on 0-based even blocks, subject priors on odd ones (the released code's split)."""
    return block % 2 == BLOCK_PARITY[_check_kind(kind)]


def prior_blocks(kind: str, num_layers: int) -> list[int]:
    """Transformer block indices (0-based) a prior of this kind lives on."""
    return list(range(BLOCK_PARITY[_check_kind(kind)], num_layers, 2))


def _retrain_message(where: str, kind: str, found: str) -> str:
    other = "subject" if kind == "motion" else "motion"
    return (f"{where}: a {kind} prior lives on the {block_parity(kind)} transformer blocks (0-based, as in the "
            f"authors' released code), but this file's LoRA is on the {found} ones. Either it is a {other} prior, "
            f"or an earlier DreamRunner trained it with the old placement (subject on even, motion on odd "
            f"blocks): train the {kind} prior again (Priors tab, or `dreamrunner train-{kind}`).")


def _pattern_value(patterns: dict, name: str, default):
    # peft's rank_pattern / alpha_pattern: a key matches a module name that ends with it.
    for pattern, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{pattern}", name):
            return value
    return default


@dataclass(eq=False)
class LoRAWeights:
    """One prior's LoRA factors: module name ("transformer_blocks.{i}.{module}", Wan "blocks.{i}.{module}") ->
    (A [r, in], B [out, r], alpha / r)."""

    kind: str
    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    name: str = ""

    @classmethod
    def load(cls, path: str | Path, kind: str | None = None) -> LoRAWeights:
        """Read a diffusers/peft CogVideoX LoRA safetensors file. `kind` defaults to the JSON card's."""
        path = Path(path)
        if not path.is_file():
            raise LoRAFileError(f"LoRA file not found: {path}")
        card = path.with_suffix(".json")
        if kind is None and card.is_file():
            kind = json.loads(card.read_text()).get("kind")
        if kind not in KINDS:
            raise LoRAFileError(f"{path.name}: kind must be one of {KINDS} (argument or card), got {kind!r}")
        tensors, metadata = read_lora_file(path)
        recorded = metadata.get(PARITY_METADATA_KEY)
        any_blocks = recorded == ANY_PARITY
        if recorded is not None and not any_blocks and recorded != block_parity(kind):
            raise LoRAFileError(_retrain_message(path.name, kind, f"{recorded} (as the file records)"))
        config = json.loads(metadata.get("lora_adapter_metadata", "{}") or "{}")
        config = {key.split(".", 1)[1] if key.startswith("transformer.") else key: value
                  for key, value in config.items()}
        # A file without the record (written before it existed) is judged by its keys, which name its blocks.
        return cls.from_state_dict(tensors, kind, config, name=path.stem, where=path.name, any_blocks=any_blocks)

    @classmethod
    def from_state_dict(cls, tensors: dict, kind: str, config: dict | None = None, name: str = "",
                        where: str = "LoRA", any_blocks: bool = False) -> LoRAWeights:
        """From peft / diffusers keys and a peft LoraConfig dict (r, lora_alpha, rank_pattern, alpha_pattern).
        `any_blocks`: an imported LoRA, on whatever blocks its keys name (no parity check)."""
        config = config or {}
        if config.get("use_dora"):
            raise LoRAFileError(f"{where}: DoRA adapters cannot be region-gated")
        factors: dict[str, dict[str, torch.Tensor]] = {}
        blocks = set()
        for key, tensor in tensors.items():
            match = _KEY.match(key)
            if match is None:
                raise LoRAFileError(f"{where}: unexpected key {key!r}; expected transformer_blocks.<i> (CogVideoX) or blocks.<i> (Wan).<module>.lora_A/B.weight")
            module, block, _, which = match.group(1), int(match.group(2)), match.group(3), match.group(4)
            blocks.add(block)
            factors.setdefault(module, {})[which] = tensor
        wrong = [] if any_blocks else sorted(b for b in blocks if not block_parity_ok(kind, b))
        if wrong and len(wrong) == len(blocks):  # all on the other parity: the placement before issue 16
            raise LoRAFileError(_retrain_message(where, kind, PARITY_NAMES[1 - BLOCK_PARITY[kind]]))
        if wrong:
            raise LoRAFileError(f"{where}: a {kind} prior must only touch {block_parity(kind)} blocks (0-based), "
                                f"but has block {wrong[0]}")
        if not factors:
            raise LoRAFileError(f"{where}: no LoRA weights in the file")
        modules = {}
        for module, pair in factors.items():
            if set(pair) != {"A", "B"} or pair["A"].shape[0] != pair["B"].shape[1]:
                raise LoRAFileError(f"{where}: {module} needs lora_A [r, in] and lora_B [out, r] of one rank")
            rank = pair["A"].shape[0]
            r = _pattern_value(config.get("rank_pattern") or {}, module, config.get("r", rank))
            alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", r))
            scaling = alpha / (r ** 0.5 if config.get("use_rslora") else r)
            modules[module] = (pair["A"], pair["B"], float(scaling))
        return cls(kind=kind, modules=modules, name=name)

    @property
    def blocks(self) -> set[int]:
        return {int(name.split(".")[1]) for name in self.modules}


@dataclass(eq=False)
class GatedLoRA:
    """A prior bound to prompts of the scene: it acts on their text tokens and their video regions only.

    `low_noise`: a two-expert (Wan 2.2 A14B) prior's low-noise LoRA, for `transformer_2`; `weights` is then its
    high-noise one. None: `weights` on every transformer."""

    weights: LoRAWeights
    prompts: tuple[int, ...]
    scale: float = 1.0
    low_noise: LoRAWeights | None = None

    def on_expert(self, low_noise: bool) -> GatedLoRA:
        """The one-file LoRA an A14B expert runs: this prior's low-noise or high-noise factors (the same for a
        one-file prior)."""
        if self.low_noise is None:
            return self
        return GatedLoRA(self.low_noise if low_noise else self.weights, self.prompts, self.scale)


def low_noise_file(weights: str | Path, card: dict) -> Path | None:
    """The low-noise expert's file of a two-expert (Wan 2.2 A14B) prior whose high-noise file is `weights`, as its
    card names it (beside `weights`); None for a one-file prior. Raises LoRAFileError for a name with a folder
    in it: a card, which may come from someone else's project, names a file beside the prior and nowhere else."""
    name = card.get(LOW_NOISE_CARD_KEY)
    if name is None:
        return None
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise LoRAFileError(f"{Path(weights).name}: its card's {LOW_NOISE_CARD_KEY} {name!r} is not a file name")
    return Path(weights).with_name(name)


def one_transformer_refusal(name: str) -> LoRAFileError:
    """The error for a two-expert prior on a model with one transformer, where half of it would be dropped."""
    return LoRAFileError(f"{name}: a two-expert prior (a LoRA per Wan 2.2 A14B expert) renders on Wan 2.2 A14B "
                         f"only; render with wan2.2-a14b, train it again with the story's backend, or unbind it "
                         f"(dreamrunner prior unbind)")


def bound_prompts(plan: RegionPlan, kind: str, target: str) -> tuple[int, ...]:
    """Prompts a prior binds to, explicitly: subject -> `plan.character_ids[p]`, motion -> `plan.motions[p]`."""
    if kind not in KINDS:
        raise LoRAFileError(f"kind must be one of {KINDS}, got {kind!r}")
    table = plan.character_ids if kind == "subject" else plan.motions
    return tuple(p for p, values in enumerate(table) if target in values)


@dataclass(eq=False)
class GatedLinearHook:
    """Forward hook on one linear: adds the stacked, per-token gated deltas of the LoRAs that target it."""

    context: object  # SR3AIContext: gives the GateRows (tokens reached, their [rows, sum r] gate) of this linear
    module: str  # "transformer_blocks.{i}.{module}"
    lora_ids: tuple[int, ...]
    down: torch.Tensor  # [sum r, in]
    up: torch.Tensor  # [out, sum r]
    ranks: tuple[int, ...]
    scalings: tuple[float, ...]
    handle: object = field(default=None, repr=False)

    def __call__(self, module, args, output):
        x = args[0]
        if self.down.device != x.device:  # set while group offloading kept the weights on the CPU
            self.down, self.up = self.down.to(x.device), self.up.to(x.device)
        start, stop, gate = self.context.lora_gate(self, x.shape[1], x.device, x.dtype)
        if start == stop:  # no LoRA of this linear reaches a token of this call
            return output
        hidden = F.linear(x[:, start:stop], self.down).mul_(gate)
        # One GEMM per sample adds the delta into the base output's rows in place (beta = 1): no delta
        # tensor, no add, no copy of the output (out-of-place addmm copies it first). The base linear does not
        # keep its output for backward, so this is autograd-safe.
        for rows, delta in zip(output[:, start:stop], hidden):
            rows.addmm_(delta, self.up.t())
        return output
