"""``voxray train talker``: a codec language model (text -> audio codes) on Ray Train workers,
each running a DeepSpeed ZeRO engine, over a store whose rows carry ``audio_codes`` (from the
manifest, or written by ``voxray codec encode``). Reads top to bottom: plan (driver) -> model ->
collate -> validate -> loop -> export -> train (driver).

``finetune.init_from=TALKER/final`` starts from a trained talker (same codec); with
``lora.rank > 0`` only the adapters (LoRA, or DoRA with ``lora.dora=true``) and the embedding
rows of tokens, speakers and languages new to that model train.

``model.pretrained=FOLDER`` fine-tunes a pretrained talker of another architecture instead
(Sesame CSM; ``models/pretrained/``: one file per architecture behind one interface): its own
tokenizer, inputs and loss, the same loop, validation, checkpoints and sweeps, and an export in
its upstream layout (``save_pretrained``; peft's adapter folder with ``finetune.export=adapter``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from voxray import uri
from voxray.audio import AudioSpec
from voxray.config import Config
from voxray.data.batching import PAD_ID, references
from voxray.export import FINAL_DIR, TRANSFORMERS, read_final, write_adapter, write_final
from voxray.losses.talker import combine, names, sum_names, talker_losses
from voxray.models import talker as talker_model
from voxray.models.pretrained import training as pretrained_training
from voxray.train import launch
from voxray.train.checkpoint import evaluation_weights, load_weights
from voxray.train.data import PrefetchedShard
from voxray.train.deepspeed_config import deepspeed_config
from voxray.train.distributed import Sums, aligned_batches
from voxray.train.ema import load_eval_weights, make_ema, update_ema
from voxray.train.engine import OptimizerSettings, build_engine, grad_norm, parameter_counts
from voxray.models.adapters import adapter_state, grow_and_adapt, merge_lora, rank_space
from voxray.labels import map_labels, merge_labels, store_labels
from voxray.train.meter import Meter
from voxray.train.contract import Recipe, WorkerSettings
from voxray.train.worker import Worker, start

FAMILY = "talker"
METRIC = "val_ce"                       # best-k, early stopping, sweeps: see REFERENCE_WEIGHTS
# val_ce weighs the codebooks' cross-entropies as the loss does at its defaults, whatever loss.*
# says, so that runs (and sweep trials over loss.sub_codebooks) compare; val_loss is the run's own.
REFERENCE_WEIGHTS = {"first_codebook": 1.0, "sub_codebooks": 0.3, "text_weight": 0.0}
METRIC_LABEL = "val cross-entropy"
METRICS = ("val_ce", "val_loss")   # what train.checkpoint_metric may name
COLUMNS = ["id", "token_ids", "speaker_index", "language_index", "n_frames", "audio_codes"]
SUB_CODEBOOKS = {None: 0.3, "csm": 1.0, "qwen3-tts": 0.3}   # loss.sub_codebooks when null (see the config)
LORA_TARGETS = r".*\.(attn\.(qkv|out)|ffn\.(up|down))$"      # attention and feed-forward projections
CODEC_KEYS = ("name", "n_codebooks", "codebook_size", "frame_rate")
SEARCH_SPACE = {"train.lr": {"loguniform": [5.0e-5, 2.0e-3]}, "loss.sub_codebooks": {"uniform": [0.1, 1.0]}}


def search_space(config: Config) -> dict[str, Any]:
    """The sweep's default: learning rate and the sub-codebook weight; LoRA rank when fine-tuning
    (a trained talker, or a pretrained one under LoRA)."""
    lora = config.finetune.init_from or (config.model.pretrained and config.lora.rank > 0)
    return {**SEARCH_SPACE, **(rank_space(config.lora) if lora else {})}


def tokens_and_frames(row: dict[str, Any]) -> int:
    """What a row costs the model: its whole sequence. Batches are bucketed by it."""
    return len(row["token_ids"]) + len(row["audio_codes"])


# ---------------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Plan:
    store: str
    run: str
    config: Config
    store_stats: dict[str, Any]
    build_args: dict[str, Any]
    codec: dict[str, Any]                     # what the codes are (and where the codec is, when voxray's)
    vocabulary: list[str]
    speakers: list[str]
    languages: list[str]
    g2p: dict[str, str]
    init_from: Optional[str] = None
    base_build_args: Optional[dict[str, Any]] = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)   # store index -> model index
    added: dict[str, list[int]] = field(default_factory=dict)   # embedding rows new to the base
    pretrained: Optional[str] = None                            # a pretrained talker's folder (model.pretrained)


def prepare(store: str, run: str, config: Config, open_run: bool = True) -> Plan:
    """The store's codes and labels (and the base talker when fine-tuning), checked against each
    other; the run folder opened."""
    store, run = uri.absolute(store), uri.absolute(run)
    if config.finetune.init_from:
        config = config.model_copy(update={"finetune": config.finetune.model_copy(
            update={"init_from": uri.absolute(config.finetune.init_from)})})
    stats = launch.store_stats(store)
    config = launch.steps_of_epochs(config, stats)
    if not stats.get("codec"):
        raise ValueError(f"the feature store {store} has no audio codes: give audio_codes in the manifest, or "
                         "encode the store with voxray codec encode")
    codec = {key: value for key, value in stats["codec"].items() if key in (*CODEC_KEYS, "codec")}
    spec = AudioSpec(**stats["audio_spec"])
    config = config.model_copy(update={"audio": spec})
    plan = dict(store=store, run=run, store_stats=stats, codec=codec, **store_labels(stats))
    model = config.model
    if model.pretrained:
        return _prepare_pretrained(plan, config, open_run)
    config = _sub_codebooks(config, None)
    build_args = dict(preset=model.preset, vocab_size=len(plan["vocabulary"]), n_speakers=len(plan["speakers"]),
                      n_languages=len(plan["languages"]), n_codebooks=codec["n_codebooks"],
                      codebook_size=codec["codebook_size"], codebook_head=model.codebook_head,
                      dropout=model.dropout, checkpointing=model.checkpointing, conditioning=model.conditioning,
                      n_mels=spec.n_mels)
    if config.finetune.init_from:
        base = read_final(config.finetune.init_from, family=FAMILY)
        theirs = {key: base.manifest["codec"].get(key) for key in CODEC_KEYS[:3]}
        ours = {key: codec.get(key) for key in CODEC_KEYS[:3]}
        if theirs != ours:
            raise ValueError(f"the base talker {config.finetune.init_from} speaks codes {theirs}; this store's are "
                             f"{ours}: fine-tune on codes from the same codec")
        config = config.model_copy(update={"model": base.config.model})
        merged = merge_labels(base, plan)
        build_args = {**base.manifest["build"], **merged.pop("sizes")}
        plan.update(merged, init_from=config.finetune.init_from, base_build_args=base.manifest["build"])
    if open_run:            # not when exporting a checkpoint of the run (train.export_checkpoint)
        launch.open_run(run, config, store)
    return Plan(config=config, build_args=build_args, **plan)


def _sub_codebooks(config: Config, architecture: Optional[str]) -> Config:
    """``loss.sub_codebooks`` resolved: the model's own weight when null."""
    if config.loss.sub_codebooks is not None:
        return config
    return config.model_copy(update={"loss": config.loss.model_copy(
        update={"sub_codebooks": SUB_CODEBOOKS[architecture]})})


def _prepare_pretrained(plan: dict[str, Any], config: Config, open_run: bool) -> Plan:
    """A pretrained talker's plan: its folder checked (architecture, files), its codec against the
    store's (name, books, size, frame rate: a store encoded with another codec is refused, naming
    both), and its builder arguments (what the export and the validation read)."""
    folder = uri.absolute(config.model.pretrained)
    arch = pretrained_training.talker(folder)
    theirs, ours = arch.codec(), plan["codec"]
    keys = ("name", *CODEC_KEYS[1:])
    model_codes, store_codes = {key: theirs[key] for key in keys}, {key: ours.get(key) for key in keys}
    if model_codes != store_codes:
        raise ValueError(f"the pretrained {arch.architecture} in {folder} speaks {arch.codec_name} codes "
                         f"{model_codes}; this store's are {store_codes}: "
                         f"encode the store with its codec (voxray codec encode --codec "
                         f"pretrained:{arch.codec_name}=FOLDER)")
    if config.finetune.export == "adapter" and arch.adapter_export:
        raise ValueError(f"finetune.export=adapter with a pretrained {arch.architecture}: {arch.adapter_export}")
    config = _sub_codebooks(config.model_copy(update={"model": config.model.model_copy(update={"pretrained": folder})}),
                            arch.architecture)
    build_args = {"architecture": arch.architecture, "pretrained": folder, "n_codebooks": theirs["n_codebooks"],
                  "codebook_size": theirs["codebook_size"], "layers": arch.layers()}
    if open_run:
        launch.open_run(plan["run"], config, plan["store"])
    return Plan(config=config, build_args=build_args, pretrained=folder, **plan)


# ------------------------------------------------------------------------------------- model

def build_model(plan: Plan, load_base: bool = True, ds_config: Optional[dict[str, Any]] = None) -> torch.nn.Module:
    """Built fresh, or the base talker grown to the new label sets, with adapters when
    ``lora.rank > 0``; a pretrained talker loaded from its folder (partitioned as it loads with a
    ZeRO-3 ``ds_config``)."""
    if plan.pretrained:
        config = plan.config
        return pretrained_training.build(plan.pretrained, config.lora, precision=config.deepspeed.precision,
                                         checkpointing=config.model.checkpointing,
                                         train_heads=config.lora.train_heads, ds_config=ds_config,
                                         total_steps=config.train.max_steps)
    if plan.init_from is None:
        return talker_model.build(**plan.build_args)
    model = talker_model.build(**plan.base_build_args)
    if load_base:
        model.load_state_dict(read_final(plan.init_from).weights)
    sizes = {key: plan.build_args[key] for key in ("vocab_size", "n_speakers", "n_languages")}
    return grow_and_adapt(model, sizes, plan.config.lora, LORA_TARGETS, plan.added, head_modules(plan),
                          total_steps=plan.config.train.max_steps)


def head_modules(plan: Plan) -> Optional[list[str]]:
    """``lora.train_heads``: the talker's code embeddings and output heads, by module name, for
    peft's ``modules_to_save`` (each a leaf: peft wraps a module, not a list's items)."""
    if not plan.config.lora.train_heads:
        return None
    args = plan.build_args
    depth = args.get("codebook_head") == "depth" and args["n_codebooks"] > 1
    names = [f"{table}.{i}" for table in ("code_embeddings", "heads") for i in range(args["n_codebooks"])]
    names += ["text_head"] + (["depth_in"] + [f"depth_embeddings.{i}" for i in range(args["n_codebooks"] - 1)]
                              if depth else [])
    return names


EMBEDDINGS = re.compile(r"(^|\.)(token_embedding|speaker_embedding|language_embedding|code_embeddings|"
                        r"depth_embeddings|bos|prompted)(\.|$)")
HEAD_PARTS = re.compile(r"(^|\.)(heads|text_head|depth|depth_in)\.")
BLOCK = re.compile(r"(^|\.)decoder\.blocks\.(\d+)\.")


def parameter_groups(model: torch.nn.Module, train: Any, layers: int,
                     patterns: tuple[re.Pattern, re.Pattern, re.Pattern] = (EMBEDDINGS, HEAD_PARTS, BLOCK)
                     ) -> list[dict[str, Any]]:
    """The optimizer's parameter groups (trainable parameters only): adapters, embeddings, heads
    and the rest, each with its learning rate and weight decay (``train.*_lr``, ``*_weight_decay``),
    and decoder block i of ``layers`` at ``layer_decay^(layers - 1 - i)`` times its group's rate.
    Parameters that end up with the same rate and decay share one group (each group costs
    DeepSpeed's ZeRO optimizer a pass per step). ``patterns``: the embeddings', heads' and
    blocks' names (a pretrained talker's architecture has its own)."""
    embeddings, heads, blocks = patterns
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if "lora_" in name:
            kind, lr, decay = "adapters", train.adapter_lr, train.adapter_weight_decay
        elif embeddings.search(name) or "trainable_tokens" in name:
            kind, lr, decay = "embeddings", train.embedding_lr, train.embedding_weight_decay
        elif heads.search(name):
            kind, lr, decay = "heads", train.head_lr, train.head_weight_decay
        else:
            kind, lr, decay = "rest", None, None
        block = blocks.search(name)
        depth = layers - 1 - int(block.group(2)) if block else 0
        rate, decay = (lr or train.lr) * train.layer_decay ** depth, train.weight_decay if decay is None else decay
        group = groups.setdefault((rate, decay), {"names": [], "params": [], "lr": rate, "weight_decay": decay})
        label = kind + (f"/depth{depth}" if block and train.layer_decay != 1 else "")
        if label not in group["names"]:
            group["names"].append(label)
        group["params"].append(parameter)
    return [{**group, "name": "+".join(group.pop("names"))} for group in groups.values()]


def _pad(arrays: list[np.ndarray], value: int) -> np.ndarray:
    longest = max(len(a) for a in arrays)
    out = np.full((len(arrays), longest, *arrays[0].shape[1:]), value, dtype=np.int64)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def columns(config: Config) -> list[str]:
    """What the workers read: a reference encoder also needs the mels, and both reference ways
    the rows' sources and their ``ref_audio``."""
    if config.model.pretrained:
        return pretrained_training.talker(uri.absolute(config.model.pretrained)).columns
    extra = {"table": [], "prompt": ["source", "ref_audio"], "reference": ["source", "ref_audio", "mel"]}
    return COLUMNS + extra[config.model.conditioning]


def collate(plan: Plan, rows: list[dict[str, Any]], rng: Optional[np.random.Generator] = None) -> dict[str, Any]:
    """Store rows -> tokens [B, L], codes [B, T, K] and their lengths, speakers, languages; with
    ``model.conditioning=reference`` the reference mels [B, R, n_mels]; with ``prompt`` each
    row's reference text and codes lead its own (``prompt_frames`` [B] of them are not learnt;
    a row whose speaker has no other utterance in the batch goes without). A pretrained talker's
    rows go through its own collate (its tokenizer and chat template)."""
    rows = map_labels(rows, plan.maps)
    missing = [row["id"] for row in rows if row["audio_codes"] is None or len(row["audio_codes"]) == 0]
    if missing:
        raise ValueError(f"rows without audio codes in the store: {', '.join(missing[:5])}")
    if plan.pretrained:
        return pretrained_training.talker(plan.pretrained).collate(rows, rng, plan.config.loss.depth_frames)
    model = plan.config.model
    tokens = [np.asarray(r["token_ids"], dtype=np.int64) for r in rows]
    codes = [np.asarray(r["audio_codes"], dtype=np.int64) for r in rows]
    batch: dict[str, Any] = {}
    if model.conditioning != "table":
        chosen = references(rows, rng)
    if model.conditioning == "prompt":
        given = [0 if j is None else min(len(codes[j]), model.reference_frames) for j in chosen]
        tokens = [t if j is None else np.concatenate([tokens[j], t]) for t, j in zip(tokens, chosen)]
        codes = [c if j is None else np.concatenate([codes[j][: n], c]) for c, j, n in zip(codes, chosen, given)]
        batch["prompt_frames"] = torch.tensor(given)
    if model.conditioning == "reference":
        mels = [np.asarray(rows[i if j is None else j]["mel"], dtype=np.float32)[: model.reference_frames]
                for i, j in enumerate(chosen)]
        longest = max(len(m) for m in mels)
        batch["ref_mels"] = torch.from_numpy(np.stack([np.pad(m, ((0, longest - len(m)), (0, 0))) for m in mels]))
        batch["ref_mel_lengths"] = torch.tensor([len(m) for m in mels])
    return {**batch, "tokens": torch.from_numpy(_pad(tokens, PAD_ID)),
            "token_lengths": torch.tensor([len(t) for t in tokens]),
            "codes": torch.from_numpy(_pad(codes, 0)), "code_lengths": torch.tensor([len(c) for c in codes]),
            "speakers": torch.tensor([int(r["speaker_index"]) for r in rows]),
            "languages": torch.tensor([int(r["language_index"]) for r in rows])}


def losses(model, batch: dict[str, Any], config: Config, device: torch.device) -> dict[str, torch.Tensor]:
    out = model({k: v.to(device) for k, v in batch.items()})
    weights = config.loss
    return talker_losses(out, first_codebook=weights.first_codebook, sub_codebooks=weights.sub_codebooks,
                         text_weight=weights.text)


# ------------------------------------------------------------------------------------ worker

@torch.no_grad()
def validate(plan: Plan, worker: Worker, val_shard: PrefetchedShard, eval_model) -> dict[str, float]:
    """Every val row of every rank counted once: per-codebook cross-entropy and accuracy,
    ``val_ce`` (at the reference weights), ``val_loss`` (the run's loss), and code frames per text
    token (for generation's limit)."""
    eval_model.eval()
    k_books = plan.build_args["n_codebooks"]
    sums = Sums([*sum_names(k_books), "code_frames", "text_tokens"])
    batches = list(val_shard.batches(plan.config.train.batch_size))
    for rows, counts in (aligned_batches(batches, worker.device) if plan.pretrained
                         else ((rows, True) for rows in batches)):
        batch = collate(plan, rows)
        out = eval_model({k: v.to(worker.device) for k, v in batch.items()})
        if not counts:
            continue
        sums.add(talker_losses(out)["sums"])
        sums.add({"code_frames": batch["code_lengths"].sum(), "text_tokens": batch["token_lengths"].sum()})
    totals = sums.reduce(worker.device)
    ce = [totals[f"ce_sum_{k}"] / max(totals[f"targets_{k}"], 1) for k in range(k_books)]
    text = totals["text_ce_sum"] / max(totals["text_targets"], 1)
    weights, ce_t = plan.config.loss, [torch.tensor(c) for c in ce]
    loss = combine(ce_t, torch.tensor(text), first_codebook=weights.first_codebook,
                   sub_codebooks=weights.sub_codebooks, text_weight=weights.text)
    fixed = combine(ce_t, torch.tensor(text), **REFERENCE_WEIGHTS)
    metrics = {METRIC: float(fixed), "val_loss": float(loss), "val_text_ce": text,
               "val_frames_per_token": totals["code_frames"] / max(totals["text_tokens"], 1)}
    for k in range(k_books):
        metrics[f"val_ce_{k}"] = ce[k]
        metrics[f"val_acc_{k}"] = totals[f"correct_{k}"] / max(totals[f"targets_{k}"], 1)
    eval_model.train()
    return metrics


def train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: setup -> restore -> loop (step, log, validate + checkpoint) -> export."""
    settings = WorkerSettings.of(loop_config)
    plan: Plan = settings.plan
    config, train = plan.config, plan.config.train
    worker = start(settings)
    ds_config = deepspeed_config(train, config.deepspeed, worker.world_size)
    model = build_model(plan, ds_config=ds_config).to(worker.device)
    ema = make_ema(model, train.ema_decay)
    if plan.pretrained:         # validates on the engine's module: no second copy of a large model
        eval_model, arch = None, pretrained_training.talker(plan.pretrained)
        groups = parameter_groups(model, train, arch.layers(), (arch.embeddings, arch.heads, arch.block))
    else:
        eval_model = build_model(plan, load_base=False).to(worker.device)
        groups = parameter_groups(model, train, talker_model.layers(plan.build_args))
    engine, lr_schedule = build_engine(model, OptimizerSettings.of(train), ds_config, parameters=groups)
    trainable_only = config.lora.rank > 0
    emas = {"model": ema} if ema is not None else {}
    worker.restore({"model": engine}, emas, trainable_only=trainable_only)
    stream = worker.train_stream(lambda rows, rng: collate(plan, rows, rng), batch_size=train.batch_size,
                                 length=tokens_and_frames)
    val_shard = worker.val_shard()
    worker.started({"model": parameter_counts(model)}, progress=("total", "ce_0", "acc_0"),
                   val_progress=(METRIC, "val_ce_0", "val_acc_0", f"val_acc_{plan.build_args['n_codebooks'] - 1}"))

    loss_names = names(plan.build_args["n_codebooks"])
    meter = Meter(loss_names, unit="code_frames")
    frames_per_token: Optional[float] = None            # from the last validation, for the export
    while worker.training():                          # one optimizer step per iteration
        model.train()
        skipped_before = engine.skipped_steps
        for _ in range(train.grad_accum):             # DeepSpeed sums the micro-batches' gradients and
            batch = stream.next()                     # its step() applies them after the last one
            parts = losses(engine, batch, config, worker.device)
            engine.backward(worker.regularised(parts["total"]))       # + AdaLoRA's orthogonality term
            if engine.is_gradient_accumulation_boundary():
                worker.before_step(engine)            # percentile clip, per-layer gradient norms, AdaLoRA
            engine.step()
            meter.add(parts, units=int(batch["code_lengths"].sum()), padding=stream.last_padding)
        worker.after_step(engine)
        if worker.count_step(skipped=engine.skipped_steps > skipped_before):
            update_ema(ema, engine, worker.state.step)
        if worker.due(train.log_every):
            worker.log(meter.reduce(worker.device), lr=lr_schedule.get_last_lr()[0], grad_norm=grad_norm(engine))
            meter.reset()
        if worker.validation_due():
            if eval_model is not None:
                load_eval_weights(eval_model, engine, ema)
            metrics = validate(plan, worker, val_shard, eval_model or engine.module)
            frames_per_token = metrics["val_frames_per_token"]
            worker.checkpoint(metrics, engines={"model": engine}, emas=emas, stream=stream,
                              trainable_only=trainable_only)
            meter.reset()
    if plan.pretrained:
        state = gathered_state(engine, worker.rank)      # every rank (gathers at ZeRO-3)
        worker.finish(lambda: export_pretrained(plan, state, worker.state.step, frames_per_token))
        return
    load_eval_weights(eval_model, engine, ema)          # every rank (gathers at ZeRO-3 without an EMA)
    worker.finish(lambda: export(plan, eval_model, worker.state.step, frames_per_token))


def gathered_state(engine, rank: int) -> Optional[dict[str, torch.Tensor]]:
    """The engine's full trained weights on rank 0's CPU (None elsewhere); every rank calls it."""
    from voxray.train.engine import gathered

    with gathered(engine):
        if rank != 0:
            return None
        return {k: v.detach().cpu().clone() for k, v in engine.module.state_dict().items()}


def export_pretrained(plan: Plan, state: dict[str, torch.Tensor], step: int, frames_per_token: Optional[float],
                      folder: Optional[str] = None) -> None:
    """A pretrained talker's RUN_URI/final (or ``folder``): the base model with the trained
    weights loaded and adapters merged, in its upstream layout (``save_pretrained``, tokenizer and
    processor files); with ``finetune.export=adapter`` peft's ``adapter/`` for the base instead;
    voxray's model.json (format ``transformers``, speakers as the model's ids), config.yaml,
    audio_spec.json and stats.json beside them."""
    folder = folder or uri.join(plan.run, FINAL_DIR)
    model = build_model(plan)
    load_weights(model, state)
    adapter_only = plan.config.finetune.export == "adapter"
    pretrained_training.write_export(model, folder, adapter_only=adapter_only, speakers=plan.speakers, store=plan.store)
    manifest = {"family": FAMILY, "format": TRANSFORMERS, "build": plan.build_args, "speakers": plan.speakers,
                "speaker_ids": {name: i for i, name in enumerate(plan.speakers)}, "languages": plan.languages,
                "codec": plan.codec, "frames_per_token": frames_per_token, "step": step,
                "base": plan.pretrained, "adapter_only": adapter_only, "lora_rank": plan.config.lora.rank,
                "dora": plan.config.lora.dora}
    write_final(folder, weights=None, manifest=manifest, config=plan.config, stats=plan.store_stats)


def export(plan: Plan, eval_model, step: int, frames_per_token: Optional[float], folder: Optional[str] = None) -> None:
    """RUN_URI/final: the weights (EMA when kept, adapters merged), the codec they speak, and code
    frames per text token (generation's length limit scales with it). With
    ``finetune.export=adapter``: only RUN_URI/final/adapter/, the adapters and new embedding rows
    with the label sets they need, to load on top of the base export. ``folder``: instead of
    RUN_URI/final."""
    folder = folder or uri.join(plan.run, FINAL_DIR)
    manifest = {"family": FAMILY, "build": {**plan.build_args, "checkpointing": False}, "speakers": plan.speakers,
                "languages": plan.languages, "g2p": plan.g2p, "codec": plan.codec,
                "frames_per_token": frames_per_token, "step": step, "init_from": plan.init_from,
                "lora_rank": plan.config.lora.rank, "dora": plan.config.lora.dora}
    if plan.config.finetune.export == "adapter":
        write_adapter(folder, adapter_state(eval_model), {
            **manifest, "vocabulary": plan.vocabulary, "added": plan.added, "lora": plan.config.lora.model_dump(),
            "targets": LORA_TARGETS, "modules_to_save": head_modules(plan)})
        return
    write_final(folder, weights=merge_lora(eval_model).state_dict(), manifest=manifest,
                config=plan.config, vocabulary=plan.vocabulary, stats=plan.store_stats)


def export_checkpoint(plan: Plan, checkpoint: str, step: int, metrics: dict[str, float], output: str) -> None:
    """``export`` of the weights in a merged checkpoint folder (local) into ``output``, with the
    frames per token of that step's validation (``voxray export RUN --checkpoint``)."""
    lora = plan.config.lora.rank > 0
    weights = evaluation_weights(checkpoint, "model", plan.config.deepspeed.zero_stage, lora)
    if plan.pretrained:
        export_pretrained(plan, weights, step, metrics.get("val_frames_per_token"), output)
        return
    model = build_model(plan, load_base=lora)
    load_weights(model, weights)
    export(plan, model, step, metrics.get("val_frames_per_token"), output)


# ------------------------------------------------------------------------------------ driver

RECIPE = Recipe(family=FAMILY, metric=METRIC, metric_label=METRIC_LABEL, metrics=METRICS, prepare=prepare,
                columns=lambda plan: columns(plan.config), train_loop=train_loop, search_space=search_space,
                export_checkpoint=export_checkpoint)
train = RECIPE.train            # the family's entry point: train(store, run, config, callbacks, gate, console)
