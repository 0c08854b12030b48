"""Import an outside CogVideoX or Wan LoRA as a subject or motion prior (a Wan 2.2 A14B high-noise / low-noise pair
as a two-expert prior).

Accepted layouts (safetensors only: the file is read by `dreamrunner.attention.read_lora_file`, which refuses
pickles):
- diffusers: `CogVideoXPipeline.save_lora_weights` output and diffusers' CogVideoX LoRA training script
  (`pytorch_lora_weights.safetensors`, a file or its folder): `transformer.transformer_blocks.{i}.{module}.
  lora_A.weight` / `lora_B.weight`, rank and alpha from its `lora_adapter_metadata` when there (else alpha = rank,
  diffusers' default);
- peft `save_pretrained`: a folder with `adapter_model.safetensors` (`base_model.model.transformer_blocks...`)
  and `adapter_config.json` (r, lora_alpha, rank_pattern, alpha_pattern, use_rslora);
- kohya / ComfyUI: `lora_unet_transformer_blocks_0_attn1_to_q.lora_down.weight` / `.lora_up.weight` /
  `.alpha` (also `lora_transformer_...`), and dotted names under `diffusion_model.` (lora_A/B or
  lora_down/up, per-module `.alpha`); alpha = rank where a module has none.
- Wan 2.1: the same layouts on `blocks.{i}` (diffusers `WanPipeline.save_lora_weights`: `transformer.blocks.{i}.
  attn1.to_q...`), and the original Wan / ComfyUI / musubi-tuner names (`diffusion_model.blocks.{i}.self_attn.q`,
  `cross_attn.k`, `ffn.0`; kohya `lora_unet_blocks_0_self_attn_q`), mapped to diffusers' module names.

The converted file is a prior file like a trained one (docs/priors.md, "The file") in `media/priors/`. A LoRA
whose blocks are not its kind's parity (one trained on all blocks, or on blocks its author chose) records
`dreamrunner_block_parity: "any"`: it loads on the blocks its keys name and is gated, like every prior, to the
regions and text of the entities it is bound to.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from ..attention.lora import (ANY_PARITY, CARD_EXPERTS, KINDS, LOW_NOISE_CARD_KEY, LoRAFileError, LoRAWeights,
                              block_parity, block_parity_ok, low_noise_file, read_lora_file)
from ..files import file_sha256
from ..project import Project
from ..story import Prior, slug
from .lora import LOW_NOISE_SUFFIX, write_prior_file
from .service import CARD_FORMAT, PRIORS_DIR

# The linear layers of a CogVideoX transformer block: what a kohya name (dots turned into "_") maps back to.
BLOCK_LINEARS = ("norm1.linear", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "norm2.linear",
                 "ff.net.0.proj", "ff.net.2")
# The linears of a Wan block: diffusers' names, and the original Wan code's names for them.
WAN_BLOCK_LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                     "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")
WAN_ORIGINAL_NAMES = {f"{attention}.{short}": f"{ours}.{long}"
                      for attention, ours in (("self_attn", "attn1"), ("cross_attn", "attn2"))
                      for short, long in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"))}
WAN_ORIGINAL_NAMES |= {"ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}
_KOHYA_MODULES = {module.replace(".", "_"): module for module in BLOCK_LINEARS}
_WAN_KOHYA_MODULES = {name.replace(".", "_"): name for name in WAN_BLOCK_LINEARS + tuple(WAN_ORIGINAL_NAMES)}
_PREFIX = re.compile(r"^(?:base_model\.model\.|model\.diffusion_model\.|diffusion_model\.|transformer\.)")
_DOTTED = re.compile(r"^(transformer_blocks|blocks)\.(\d+)\.(.+?)\.(?:(lora_A|lora_B|lora_down|lora_up)\.weight|(alpha))$")
_KOHYA = re.compile(r"^lora_(?:unet|transformer)_(transformer_blocks|blocks)_(\d+)_(.+?)\.(?:(lora_down|lora_up)\.weight|(alpha))$")
_FACTOR = {"lora_A": "A", "lora_down": "A", "lora_B": "B", "lora_up": "B"}
# What a folder may hold, in the order looked for; a .bin is named so that read_lora_file refuses it by name.
FOLDER_FILES = ("adapter_model.safetensors", "pytorch_lora_weights.safetensors", "adapter_model.bin",
                "pytorch_lora_weights.bin")


class LoRAImportError(LoRAFileError):
    """An outside LoRA that cannot be imported as a prior (the message names the file and what is wrong)."""


def _weights_file(path: Path) -> Path:
    if not path.is_dir():
        return path
    for name in FOLDER_FILES:
        if (path / name).is_file():
            return path / name
    found = sorted(p.name for p in path.glob("*.safetensors"))
    if len(found) == 1:
        return path / found[0]
    raise LoRAImportError(f"{path}: no LoRA file in the folder (looked for {', '.join(FOLDER_FILES)}"
                          f"{'; several .safetensors files: name one' if found else ''})")


def _peft_config(weights: Path, metadata: dict[str, str]) -> tuple[dict | None, str]:
    """The PEFT config of the file (adapter_config.json beside it, or diffusers' metadata) and the layout's name."""
    beside = weights.parent / "adapter_config.json"
    if beside.is_file():
        try:
            return json.loads(beside.read_text(encoding="utf-8")), "peft save_pretrained"
        except (OSError, json.JSONDecodeError) as error:
            raise LoRAImportError(f"{beside}: unreadable adapter config ({error})") from None
    packed = metadata.get("lora_adapter_metadata")
    if packed:
        config = json.loads(packed)
        return {k.split(".", 1)[1]: v for k, v in config.items() if k.startswith("transformer.")} or config, "diffusers"
    return None, ""


def convert_keys(tensors: dict[str, torch.Tensor], where: str) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, float], str]:
    """Outside LoRA keys -> {"transformer_blocks.{i}.{module}" (Wan: "blocks.{i}.{module}", diffusers' module
    names): {"A": [r, in], "B": [out, r]}}, per-module
    alphas where the file gives them, and the key style ("kohya" or "dotted"). Raises LoRAImportError for a key
    that is not a LoRA factor (or alpha) on a transformer block."""
    factors: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    styles = set()
    for key, tensor in tensors.items():
        stripped = _PREFIX.sub("", key)
        match = _DOTTED.match(stripped)
        if match is not None:
            blocks, block, module, factor, alpha = match.groups()
            if blocks == "blocks":  # Wan: diffusers' module names, or the original code's
                module = WAN_ORIGINAL_NAMES.get(module, module)
            styles.add("dotted")
        else:
            match = _KOHYA.match(key)
            if match is None:
                raise LoRAImportError(
                    f"{where}: key {key!r} is not a LoRA factor on a CogVideoX or Wan transformer block; a prior can "
                    f"only carry LoRAs on transformer_blocks.<i> / blocks.<i> (no text encoder, embedding or output "
                    f"layers, no DoRA)")
            blocks, block, kohya, factor, alpha = match.groups()
            known = _WAN_KOHYA_MODULES if blocks == "blocks" else _KOHYA_MODULES
            if kohya not in known:
                raise LoRAImportError(f"{where}: key {key!r} names {kohya!r}, not a linear layer of a "
                                      f"{'Wan' if blocks == 'blocks' else 'CogVideoX'} block ({', '.join(known)})")
            module = WAN_ORIGINAL_NAMES.get(known[kohya], known[kohya])
            styles.add("kohya")
        name = f"{blocks}.{int(block)}.{module}"
        if alpha:
            alphas[name] = float(tensor.float().reshape(-1)[0])
        else:
            factors.setdefault(name, {})[_FACTOR[factor]] = tensor.contiguous()
    if not factors:
        raise LoRAImportError(f"{where}: no LoRA weights in the file")
    return factors, alphas, "+".join(sorted(styles))


def _config(factors: dict[str, dict[str, torch.Tensor]], alphas: dict[str, float], given: dict | None,
            where: str) -> dict:
    """A PEFT LoraConfig dict naming each module exactly, its ranks and alphas: the given config's where there is
    one, else from the factors' shapes and the per-module alphas (alpha = rank where none)."""
    from peft import LoraConfig

    targets = sorted(factors)
    if given is not None:
        if given.get("use_dora"):
            raise LoRAImportError(f"{where}: DoRA adapters cannot be region-gated")
        keep = {k: given[k] for k in ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora") if k in given}
        return LoraConfig(**keep, target_modules=targets).to_dict()
    ranks = {name: pair["A"].shape[0] for name, pair in factors.items() if "A" in pair}
    module_alphas = {name: alphas.get(name, float(rank)) for name, rank in ranks.items()}
    rank = Counter(ranks.values()).most_common(1)[0][0] if ranks else 1
    alpha = Counter(module_alphas.values()).most_common(1)[0][0] if ranks else 1.0
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets,
                      rank_pattern={n: r for n, r in ranks.items() if r != rank},
                      alpha_pattern={n: a for n, a in module_alphas.items() if a != alpha}).to_dict()


@dataclass(frozen=True)
class ConvertedLoRA:
    """An outside LoRA file read, converted to the prior layout and checked as rendering checks it."""

    weights: Path  # the file read (in a folder: the one found there)
    state: dict[str, torch.Tensor]  # "transformer_blocks.{i}.{module}.lora_A/B.weight" (Wan: "blocks.{i}...")
    config: dict  # the PEFT LoraConfig dict to write with it
    layout: str  # "diffusers", "peft save_pretrained", or else the key style
    key_style: str  # "dotted", "kohya" or both
    scalings: tuple[float, ...]  # the modules' alpha / rank, each value once, sorted

    @property
    def blocks(self) -> set[int]:
        return {int(key.split(".")[1]) for key in self.state}

    @property
    def modules(self) -> set[str]:
        return {key.split(".", 2)[2].rsplit(".lora_", 1)[0] for key in self.state}

    @property
    def wan(self) -> bool:
        return all(key.startswith("blocks.") for key in self.state)


def convert_lora(source: Path, kind: str) -> ConvertedLoRA:
    """Read an outside LoRA file or folder (layouts in the module docstring) as a prior of `kind`. Raises
    LoRAFileError (LoRAImportError for what only imports check), nothing written."""
    if not source.exists():
        raise LoRAImportError(f"LoRA file not found: {source}")
    weights = _weights_file(source)
    tensors, metadata = read_lora_file(weights)  # LoRAFileError for a pickle or an unreadable file
    given, layout = _peft_config(weights, metadata)
    factors, alphas, style = convert_keys(tensors, weights.name)
    config = _config(factors, alphas, given, weights.name)
    state = {f"{name}.lora_{which}.weight": tensor for name, pair in factors.items() for which, tensor in pair.items()}
    # The checks rendering makes (both factors, one rank per module), before anything is written.
    checked = LoRAWeights.from_state_dict(state, kind, config, where=weights.name, any_blocks=True)
    scalings = tuple(sorted({scaling for _, _, scaling in checked.modules.values()}))
    return ConvertedLoRA(weights, state, config, layout or style, style, scalings)


def _expert_entries(high: ConvertedLoRA, low: ConvertedLoRA, sources: tuple[Path, Path], name: str) -> dict:
    """The card entries of an imported Wan 2.2 A14B pair, as a trained two-expert prior's card has them."""
    files = (f"{name}.safetensors", f"{name}{LOW_NOISE_SUFFIX}.safetensors")
    return {
        LOW_NOISE_CARD_KEY: files[1],
        "experts": [{"expert": expert, "transformer": transformer, "file": file, "source": source.name,
                     "rank": lora.config["r"], "alpha": lora.config["lora_alpha"], "scaling": list(lora.scalings)}
                    for (expert, transformer), file, source, lora in zip(CARD_EXPERTS, files, sources, (high, low))],
    }


def _refuse_others_files(project: Project, prior_id: str, files: list[Path]) -> None:
    """Refuse to write `files` where one is another registered prior's file (its LoRA, or a two-expert prior's
    low-noise LoRA): `--id X-low-noise` would replace the low-noise file of the pair X. The same id replaces its
    own files, as registering it again replaces the prior."""
    owners = {}
    for prior in project.story.priors:
        if prior.id == prior_id:
            continue
        path = project.resolve(prior.path)
        owners[path] = f"the file of prior {prior.id!r}"
        try:
            low = low_noise_file(path, prior.card)
        except LoRAFileError:  # a card naming no file beside it claims none
            low = None
        if low is not None:
            owners[low.resolve()] = f"the low-noise file of prior {prior.id!r}"
    for file in files:
        if (owner := owners.get(file.resolve())) is not None:
            raise LoRAImportError(f"{project.relative(file)} is {owner}: importing {prior_id!r} would overwrite it; "
                                  f"choose another --id")


def import_lora(project: Project, path: str | Path, kind: str, target: str, prior_id: str | None = None,
                low_noise: str | Path | None = None) -> Prior:
    """Convert an outside CogVideoX or Wan LoRA (file or folder, layouts in the module docstring) into a prior file in
    `media/priors/` (`<id>.safetensors` + `<id>.json`) and return the `Prior` to register
    (`dreamrunner.edits.register_prior`). `target`: a character id (subject) or a motion text (motion);
    `prior_id` defaults to `<kind>-<target>-<file name>`. The project's story is not changed.

    `low_noise`: the low-noise file (or folder) of a Wan 2.2 A14B LoRA pair, whose high-noise file is `path`: the
    prior is then a two-expert prior, as a trained one (docs/priors.md, "On Wan 2.2 A14B"): the high-noise LoRA in
    `<id>.safetensors`, the low-noise one in `<id>-low-noise.safetensors`, rendered each on its own expert.

    Raises LoRAFileError (a DreamRunnerError; LoRAImportError for what only imports check) for a missing file, a
    pickle, an unknown key, a DoRA adapter, mismatched factors, or a pair that is not of Wan LoRAs."""
    if kind not in KINDS:
        raise LoRAImportError(f"prior kind must be one of {KINDS}, got {kind!r}")
    sources = (Path(path),) if low_noise is None else (Path(path), Path(low_noise))
    loras = [convert_lora(source, kind) for source in sources]
    if len(loras) == 2 and file_sha256(loras[0].weights) == file_sha256(loras[1].weights):
        raise LoRAImportError(f"{sources[0].name} and {sources[1].name} are the same LoRA: a high-noise / low-noise "
                              "pair is two files, one trained for each expert; for one LoRA on both experts, import "
                              "it without --low-noise")
    if len(loras) == 2 and not all(lora.wan for lora in loras):
        odd = next(lora for lora in loras if not lora.wan)
        raise LoRAImportError(f"{odd.weights.name}: a high-noise / low-noise pair is Wan 2.2 A14B's, one LoRA per "
                              f"expert; this is no Wan LoRA (its blocks are transformer_blocks)")
    high = loras[0]
    blocks = sorted(set().union(*(lora.blocks for lora in loras)))
    parity = block_parity(kind) if all(block_parity_ok(kind, b) for b in blocks) else ANY_PARITY
    source = sources[0]
    name = slug(prior_id or f"{kind}-{target}-{source.stem if source.is_file() else source.name}", "imported")
    card = {
        "format": CARD_FORMAT, "kind": kind, "target": target, "imported": True,
        "learned": f"imported from {' and '.join(s.name for s in sources)} ({high.layout} layout)",
        "sources": [{"path": s.name, "sha256": file_sha256(lora.weights)} for s, lora in zip(sources, loras)],
        "layout": high.layout, "key_style": high.key_style, "blocks": blocks, "block_parity": parity,
        "modules": sorted(set().union(*(lora.modules for lora in loras))),
        "rank": high.config["r"], "alpha": high.config["lora_alpha"],
        "rank_pattern": high.config.get("rank_pattern") or {}, "alpha_pattern": high.config.get("alpha_pattern") or {},
        "use_rslora": bool(high.config.get("use_rslora")), "scaling": list(high.scalings), "is_noise": False,
    }
    folder = project.media / PRIORS_DIR
    _refuse_others_files(project, name, [folder / f"{name}.safetensors"]
                         + ([folder / f"{name}{LOW_NOISE_SUFFIX}.safetensors"] if low_noise is not None else []))
    if low_noise is not None:
        card |= _expert_entries(high, loras[1], sources, name)
        write_prior_file(folder, f"{name}{LOW_NOISE_SUFFIX}", loras[1].state, loras[1].config, parity, None)
    written = write_prior_file(folder, name, high.state, high.config, parity, card)
    return Prior(id=name, kind=kind, target=target, path=project.relative(written), card=card)
