"""``voxray <command>``: the command line. Each command is a thin shell over a library call."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from voxray.config import FAMILIES, ConfigError, config_class, describe, load_config

FAMILY_HELP = {"acoustic": "FastSpeech2-family acoustic model: phonemes -> mel",
               "vocoder": "HiFi-GAN (or Vocos-style) vocoder: mel -> waveform, a GAN on two DeepSpeed engines",
               "talker": "codec language model: text -> audio codes (LoRA/DoRA fine-tuning)"}


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (local path or s3:// URI)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own logs (INFO and up) too")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted config overrides, e.g. preprocess.min_seconds=1.0")


def _family_parsers(commands, command: str, command_help: str, output_help: str) -> list[argparse.ArgumentParser]:
    """``voxray COMMAND FAMILY --data STORE --output URI``: one sub-command per model family."""
    families = commands.add_parser(command, help=command_help).add_subparsers(dest="family", required=True)
    parsers = []
    for family in FAMILIES:
        parser = families.add_parser(family, help=FAMILY_HELP.get(family, family))
        parser.add_argument("--data", help="feature store (path or s3://)")
        parser.add_argument("--output", help=output_help)
        parser.add_argument("--help-config", action="store_true",
                            help=f"print every config key of the {family} family with its default and meaning")
        _add_config_args(parser)
        parsers.append(parser)
    return parsers


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxray", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    pre = commands.add_parser("preprocess", help="corpus -> feature store, with Ray Data")
    pre.add_argument("--input", required=True, help="LJSpeech folder, JSONL manifest or parquet (path or s3://)")
    pre.add_argument("--output", required=True, help="feature store folder (path or s3://)")
    pre.add_argument("--format", choices=["auto", "ljspeech", "jsonl", "hf-parquet"], default=None,
                     help="input format (default: preprocess.format, which defaults to auto)")
    pre.add_argument("--max-rows", type=int, default=None,
                     help="only the input's first N rows (quick runs; sets preprocess.max_rows)")
    pre.add_argument("--val-input", default=None,
                     help="a manifest whose rows are the val split instead of a hashed share of --input "
                          "(sets preprocess.val_input)")
    _add_config_args(pre)

    _family_parsers(commands, "train", "train a model from a feature store on Ray Train + DeepSpeed",
                    "run folder (path or s3://); re-running on it resumes from its latest checkpoint")
    for sweep in _family_parsers(commands, "tune", "sweep hyperparameters with Ray Tune + Optuna (TPE) + ASHA",
                                 "sweep folder (path or s3://); re-running on it resumes the sweep"):
        sweep.add_argument("--trials", type=int, help="number of trials")
        sweep.add_argument("--search-space", help="YAML search space (default: the family's own, e.g. lr and "
                                                  "loss weights, plus lora.rank when finetune.init_from is set or "
                                                  "a pretrained talker trains adapters)")

    predict = commands.add_parser("predict-mels", help="a store whose mels an acoustic model predicted (teacher-"
                                                       "forced, aligned with the audio): to fine-tune a vocoder")
    predict.add_argument("--model", required=True, help="RUN_URI/final of a trained acoustic model")
    predict.add_argument("--data", required=True, help="feature store (path or s3://)")
    predict.add_argument("--output", required=True, help="the new feature store (path or s3://)")
    predict.add_argument("--batch-size", type=int, default=16, help="rows per inference batch")
    predict.add_argument("--actors", type=int, default=1, help="model replicas (Ray Data actors)")
    predict.add_argument("--gpu", action="store_true", help="one GPU per actor")
    predict.add_argument("--overwrite", action="store_true", help="replace an output folder that is not empty")
    predict.add_argument("--verbose", action="store_true", help="show Ray's own logs (INFO and up) too")

    codec = commands.add_parser("codec", help="discrete audio codes: fit voxray's mel codec, encode a store, "
                                              "decode codes to sound").add_subparsers(dest="action", required=True)
    fit = codec.add_parser("fit", help="fit the mel codec (a residual VQ) on a store's train split, with Ray Data")
    fit.add_argument("--data", required=True, help="feature store (path or s3://)")
    fit.add_argument("--output", required=True, help="the codec's folder (path or s3://)")
    _add_config_args(fit)
    encode = codec.add_parser("encode", help="a copy of a store with the codec's audio_codes, with Ray Data")
    encode.add_argument("--codec", required=True, help="a codec folder (voxray codec fit, or a plugin's), or a "
                                                       "pretrained codec in a local folder: pretrained:mimi=DIR, "
                                                       "pretrained:dac=DIR, pretrained:encodec=DIR")
    encode.add_argument("--data", required=True, help="feature store (path or s3://)")
    encode.add_argument("--output", required=True, help="the new feature store (path or s3://)")
    encode.add_argument("--reconstruct-mels", action="store_true",
                        help="also replace the mel column by the codec's reconstruction (to fine-tune a vocoder)")
    encode.add_argument("--actors", type=int, default=1, help="codec replicas (Ray Data actors)")
    encode.add_argument("--gpu", action="store_true", help="one GPU per actor")
    encode.add_argument("--overwrite", action="store_true", help="replace an output folder that is not empty")
    encode.add_argument("--verbose", action="store_true", help="show Ray's own logs (INFO and up) too")
    decode = codec.add_parser("decode", help="one stored utterance's codes -> a wav (through a vocoder, or "
                                             "Griffin-Lim)")
    decode.add_argument("--codec", required=True, help="a codec folder, or 'precomputed' for the store's own codes")
    decode.add_argument("--data", required=True, help="feature store with audio_codes (path or s3://)")
    decode.add_argument("--id", required=True, help="the utterance's id")
    decode.add_argument("--vocoder", help="RUN_URI/final of a trained vocoder (default: Griffin-Lim)")
    decode.add_argument("--out", required=True, help="output .wav (path or s3://)")

    evaluate = commands.add_parser("evaluate", help="synthesise a store's split and measure it against the recordings "
                                                    "(MCD, F0, durations, PESQ/STOI, WER, speaker similarity, "
                                                    "predicted MOS), or score any system's audio (--audio)")
    evaluate.add_argument("--model", help="RUN_URI/final of an acoustic model or talker")
    evaluate.add_argument("--vocoder", help="RUN_URI/final of a vocoder, or 'griffin-lim'; alone: copy synthesis of "
                                            "the stored mels (default with --model: Griffin-Lim)")
    evaluate.add_argument("--audio", metavar="DIR", help="score the audio in DIR (<id>.wav per row of the split, any "
                                                         "sample rate: another system's output, a listening-test set) "
                                                         "instead of synthesising")
    evaluate.add_argument("--data", required=True, help="feature store (path or s3://)")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.add_argument("--phase", choices=["pretraining", "main", "finetuned"],
                          help="the targets of this phase of the Malaysian plan (default: its end-of-training "
                               "targets, MCD 5.5-6.5 dB, F0 RMSE 15-25 Hz, duration MAE 30-50 ms, MOS 3.5-4.2)")
    evaluate.add_argument("--target", action="append", default=[], metavar="NAME=LOW-HIGH",
                          help="override one target, e.g. --target mcd_db=4-5 (the verdict passes at or better "
                               "than the worse end)")
    evaluate.add_argument("--particle-table", metavar="FILE",
                          help="YAML of particle rows judged on a code-switched store, over the plan's six: "
                               "NAME: {contours: [rise-fall|rise|fall|flat, ...], duration_ratio: [LOW, HIGH]}")
    evaluate.add_argument("--limit", type=int, help="only the first N utterances of the split (by id)")
    evaluate.add_argument("--output", required=True, help="folder for metrics.json, utterances.parquet, audio/, "
                                                          "report.html (path or s3://)")
    evaluate.add_argument("--asr", action="append", default=[], metavar="LANG=DIR",
                          help="a local pocketsphinx model folder for a language (English has one built in)")
    evaluate.add_argument("--speaker-encoder", help="Resemblyzer weights file (default: the ones it ships)")
    evaluate.add_argument("--actors", type=int, default=1, help="model replicas (Ray Data actors)")
    evaluate.add_argument("--batch-size", type=int, default=4, help="utterances per actor call")
    evaluate.add_argument("--gpu", action="store_true", help="one GPU per actor")
    evaluate.add_argument("--seed", type=int, default=0, help="sampling seed of a talker")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an output folder that is not empty")
    evaluate.add_argument("--verbose", action="store_true", help="show Ray's own logs (INFO and up) too")

    export = commands.add_parser("export", help="a final/-style export of any checkpoint a run kept (best, latest "
                                                "or a step), to evaluate or synthesise with")
    export.add_argument("run", help="RUN_URI: the run's output folder")
    export.add_argument("--checkpoint", default="best", help="best (by the run's checkpoint metric), latest, or a "
                                                            "step number (default: best)")
    export.add_argument("--output", required=True, help="folder for the export (path or s3://; must be new or empty)")
    export.add_argument("--data", help="the run's feature store (default: the one RUN/store.json records)")

    synth = commands.add_parser("synthesize", help="text -> waveform with an exported acoustic model or talker")
    synth.add_argument("--model", required=True, help="RUN_URI/final of a trained acoustic model or talker")
    synth.add_argument("--text", required=True)
    synth.add_argument("--speaker", help="speaker name (default: the model's first speaker)")
    synth.add_argument("--language", help="language (default: the model's first language)")
    synth.add_argument("--pace", type=float, default=1.0, help=">1 speaks faster")
    synth.add_argument("--vocoder", help="RUN_URI/final of a trained vocoder (default: Griffin-Lim)")
    synth.add_argument("--out", required=True, help="output .wav (path or s3://)")
    synth.add_argument("--adapter", help="RUN/final/adapter of an adapter-only fine-tune of --model "
                                         "(finetune.export=adapter)")
    talking = synth.add_argument_group("talker models")
    talking.add_argument("--codec", help="codec folder that decodes the talker's codes (default: the voxray codec "
                                         "the export records; precomputed codes need their own, e.g. a plugin)")
    talking.add_argument("--ref-audio", help="a recording of the voice (talkers conditioned on a reference or "
                                             "prompted in context)")
    talking.add_argument("--ref-text", help="the words of --ref-audio (in-context prompting)")
    talking.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0: greedy)")
    talking.add_argument("--top-k", type=int, default=50, help="sample among the k most likely codes (0: all)")
    talking.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass")
    talking.add_argument("--max-length-factor", type=float, default=3.0,
                         help="at most this x the training data's code frames per text token")
    talking.add_argument("--seed", type=int, help="sampling seed (reproducible output)")
    return parser


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) is None]
    if missing:
        raise UsageError(f"voxray {args.command} {args.family}: the following arguments are required: "
                         f"{', '.join(missing)}")


class UsageError(Exception):
    """A required argument is missing (argparse's own exit code, 2)."""


def _preprocess(args: argparse.Namespace) -> int:
    from voxray.data.pipeline import preprocess

    flags = [f"preprocess.{key}={value}" for key, value in (("max_rows", args.max_rows), ("val_input", args.val_input))
             if value is not None]
    config = load_config(args.config, args.overrides + flags)
    stats = preprocess(args.input, args.output, config, fmt=args.format)
    splits = ", ".join(f"{name} {s['utterances']} ({s['audio_seconds']:.1f} s)"
                       for name, s in stats["splits"].items())
    print(f"\nfeature store: {args.output}")
    print(f"  input rows {stats['input_rows']}: kept {stats['kept']}, rejected {stats['rejected']}, "
          f"malformed {stats['malformed']}")
    if stats["rejected_by_reason"]:
        print(f"  rejected by reason: {json.dumps(stats['rejected_by_reason'])}")
    print(f"  splits: {splits}")
    if stats["augmented"]["utterances"]:
        made = stats["augmented"]
        print(f"  augmented train rows {made['utterances']} ({made['audio_seconds']:.1f} s; "
              f"{', '.join(f'{k} {v}' for k, v in made['by_transform'].items())}), apart from the input rows")
    if stats["denoise"]["utterances"]:
        print(f"  denoised {stats['denoise']['utterances']} utterances (preprocess.denoise="
              f"{stats['denoise']['strength']:g}): noise floor below the speech lowered by "
              f"{stats['denoise']['noise_floor_lowered_db']:.1f} dB on average")
    if stats["code_switch"]["code_switched_utterances"]:
        print(f"  code-switched utterances {stats['code_switch']['code_switched_utterances']}; particle words "
              f"{sum(stats['code_switch']['particle_words'].values())}")
    languages = ", ".join(f"{name} ({info['g2p']})" for name, info in stats["languages"].items())
    print(f"  speakers {len(stats['speakers'])}, languages {languages}, "
          f"vocabulary {len(stats['vocabulary'])} tokens")
    print(f"  {stats['audio_seconds']:.1f} s of audio in {stats['wall_seconds']:.1f} s")
    return 0


def _train(args: argparse.Namespace) -> int:
    from voxray.train.recipes import recipe

    _require(args, "data", "output")
    config = load_config(args.config, args.overrides, family=args.family)
    summary = recipe(args.family).train(args.data, args.output, config)
    metric, label = summary["metric"], summary["metric_label"]
    print(f"\nrun: {summary['run']}")
    print(f"  step {summary['step']}, {label} {summary[metric]:.4f}")
    for path, value, step in summary["best"]:
        print(f"  checkpoint step {step}: {label} {value:.4f}  {path}")
    print(f"  model: {summary['final']}")
    if "best_export" in summary:
        print(f"  best checkpoint's model (step {summary['best_export']['step']}): {summary['best_export']['output']}")
    if "evaluation" in summary:
        evaluation = summary["evaluation"]
        print(f"  evaluation ({evaluation['utterances']} test utterances): "
              + ", ".join(f"{name} {value:.3f}" for name, value in evaluation["metrics"].items())
              + f"  {summary['run']}/eval/report.html")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from voxray.tune.sweep import tune

    _require(args, "data", "output", "trials")
    config = load_config(args.config, args.overrides, family=args.family)
    summary = tune(args.data, args.output, args.trials, config, args.search_space)
    metric, label = summary["metric"], summary["metric_label"]
    print(f"\nsweep: {summary['sweep']}  ({summary['space']})")
    for row in summary["trials"]:
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    print(f"  best: {summary['best']['trial']} {label} {summary['best'][f'best_{metric}']:.4f}")
    print(f"  train it with: voxray train {args.family} --config {summary['best_yaml']} --data ... --output ...")
    return 0


def _predict_mels(args: argparse.Namespace) -> int:
    from voxray.predict_mels import predict_mels

    rows = predict_mels(args.model, args.data, args.output, batch_size=args.batch_size, actors=args.actors,
                        use_gpu=args.gpu, overwrite=args.overwrite)
    print(f"\nfeature store with predicted mels: {args.output}")
    print("  " + ", ".join(f"{split} {count}" for split, count in rows.items()) + " rows")
    print(f"  fine-tune a vocoder on it: voxray train vocoder --data {args.output} --output ... "
          "finetune.init_from=VOCODER_RUN/final")
    return 0


def _codec(args: argparse.Namespace) -> int:
    from voxray.codec import fit

    match args.action:
        case "fit":
            report = fit.fit(args.data, args.output, load_config(args.config, args.overrides))
            print(f"\ncodec: {args.output}  ({report['vectors']:,} stacked frames, {report['steps']} steps)")
            by_levels = report.get("val_mel_l1_by_codebooks", {})
            print("  val mel L1 by codebooks used: " + ", ".join(f"{k}: {v:.4f}" for k, v in by_levels.items()))
            print("  val codebook usage (used / perplexity): " + ", ".join(
                f"{u['used']}/{u['perplexity']:.0f}" for u in report.get("val_usage", [])))
        case "encode":
            result = fit.encode(args.codec, args.data, args.output, reconstruct_mels=args.reconstruct_mels,
                                actors=args.actors, overwrite=args.overwrite, use_gpu=args.gpu)
            print(f"\nfeature store with codes: {args.output}  ({result['n_codebooks']} x {result['codebook_size']} "
                  f"at {result['frame_rate']:g} Hz; {result['code_frames']:,} code frames)")
            print("  " + ", ".join(f"{split} {count}" for split, count in result["rows"].items()) + " rows")
        case "decode":
            return _decode(args)
    return 0


def _decode(args: argparse.Namespace) -> int:
    import numpy as np

    from voxray.audio import AudioSpec
    from voxray.codec import load_codec, precomputed
    from voxray.data.derive import read_stats
    from voxray.data.store import arrow_rows, read_split
    from voxray.synthesize import codes_to_audio, load_vocoder, write_wav

    spec = AudioSpec(**read_stats(args.data)["audio_spec"])
    rows = [row for split in ("train", "val", "test")
            for row in arrow_rows(read_split(args.data, split, ["id", "audio_codes", "n_frames"]))
            if row["id"] == args.id]
    if not rows or rows[0]["audio_codes"] is None:
        raise ValueError(f"{args.data} has no utterance {args.id!r} with audio_codes")
    codec = precomputed(args.data) if args.codec == "precomputed" else load_codec(args.codec)
    vocoder = load_vocoder(args.vocoder, spec) if args.vocoder else None
    audio = codes_to_audio(codec, np.asarray(rows[0]["audio_codes"]), vocoder, spec, int(rows[0]["n_frames"]))
    write_wav(args.out, audio, spec.sample_rate)
    through = f"vocoder {args.vocoder}" if vocoder else "Griffin-Lim"
    print(f"{args.out}: {len(audio) / spec.sample_rate:.2f} s from {len(rows[0]['audio_codes'])} code frames ({through})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from voxray.evaluate.report import LABELS
    from voxray.evaluate.run import evaluate

    asr = {}
    for item in args.asr:
        language, _, folder = item.partition("=")
        if not language or not folder:
            raise UsageError(f"--asr {item}: expected LANG=DIR, e.g. --asr fa=/models/pocketsphinx-fa")
        asr[language] = folder
    summary = evaluate(args.data, args.output, model=args.model, vocoder=args.vocoder, audio=args.audio,
                       split=args.split, limit=args.limit, asr=asr, speaker_encoder=args.speaker_encoder,
                       actors=args.actors, batch_size=args.batch_size, seed=args.seed, use_gpu=args.gpu,
                       overwrite=args.overwrite, phase=args.phase, target_overrides=args.target,
                       particle_table=args.particle_table)
    print(f"\nevaluation: {args.output}  ({summary['mode']}, {summary['split']} split, {summary['utterances']} "
          f"utterances, {summary['failed']} failed, {summary['wall_seconds']:.0f} s)")
    for name, value in summary["metrics"].items():
        verdict, note = summary["verdicts"].get(name), summary["notes"].get(name)
        print(f"  {LABELS[name]:34}{value:10.3f}" + (f"   target {verdict['target']}: {verdict['verdict']}"
                                                      if verdict else "") + (f"   ({note})" if note else ""))
    for error in summary["errors"][:3]:
        print(f"  failed: {error}")
    print(f"  report: {args.output}/report.html")
    return 0


def _speak(args: argparse.Namespace) -> int:
    from voxray.synthesize import load_talker, load_vocoder, speak, write_wav

    voice = load_talker(args.model, args.codec, args.adapter)
    vocoder = load_vocoder(args.vocoder, voice.final.audio_spec) if args.vocoder else None
    audio, codes, ended = speak(voice, args.text, speaker=args.speaker, language=args.language, vocoder=vocoder,
                                ref_audio=args.ref_audio, ref_text=args.ref_text, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, max_length_factor=args.max_length_factor,
                                seed=args.seed)
    rate = voice.final.audio_spec.sample_rate
    write_wav(args.out, audio, rate)
    through = f"vocoder {args.vocoder}" if vocoder else "the codec's own decoder or Griffin-Lim"
    stop = "end of speech" if ended else "stopped at the length limit (--max-length-factor)"
    print(f"{args.out}: {len(audio) / rate:.2f} s, {len(codes)} code frames, {stop} ({through})")
    return 0


def _model_family(final: str) -> Optional[str]:
    from voxray.export import read_manifest

    manifest = read_manifest(final)
    return manifest.get("family") if manifest else None


def _synthesize(args: argparse.Namespace) -> int:
    from voxray.synthesize import SynthesisError, load_vocoder, load_voice, synthesize, write_wav

    if _model_family(args.model) == "talker":
        return _speak(args)
    given = [flag for flag, value in (("--ref-audio", args.ref_audio), ("--ref-text", args.ref_text),
                                      ("--codec", args.codec)) if value]
    if given:
        raise SynthesisError(f"{', '.join(given)}: for talker models; {args.model} is not one")
    voice = load_voice(args.model, args.adapter)
    vocoder = load_vocoder(args.vocoder, voice.final.audio_spec) if args.vocoder else None
    audio, mel = synthesize(voice, args.text, speaker=args.speaker, language=args.language, pace=args.pace,
                            vocoder=vocoder)
    rate = voice.final.audio_spec.sample_rate
    write_wav(args.out, audio, rate)
    through = f"vocoder {args.vocoder}" if vocoder else "Griffin-Lim"
    print(f"{args.out}: {len(audio) / rate:.2f} s, {len(mel)} mel frames ({through})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from voxray.train.checkpoint_export import export_checkpoint

    done = export_checkpoint(args.run, args.checkpoint, args.output, store=args.data)
    value = "" if done["value"] is None else f", {done['metric']} {done['value']:.4f}"
    print(f"{done['output']}: the {done['family']} model of {done['checkpoint']} (step {done['step']}{value})")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "help_config", False):
        print("\n".join(describe(config_class(args.family))))
        return 0
    from voxray.cluster import set_verbose

    set_verbose(getattr(args, "verbose", False))
    from voxray.uri import StorageError

    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"{_name(args)}: config error: {exc}", file=sys.stderr)
    except StorageError as exc:
        print(f"{_name(args)}: storage error: {exc}", file=sys.stderr)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{exc}", file=sys.stderr)
    except KeyboardInterrupt:
        resumable = args.command in ("preprocess", "train", "tune")
        print(f"\n{_name(args)}: interrupted" + ("; what finished is kept: run the same command again to continue"
                                                 if resumable else ""), file=sys.stderr)
        return 130
    except user_errors() as exc:
        print(f"{_name(args)}: error: {exc}", file=sys.stderr)
    return 2


COMMANDS = {"preprocess": _preprocess, "train": _train, "tune": _tune, "predict-mels": _predict_mels,
            "codec": _codec, "synthesize": _synthesize, "evaluate": _evaluate, "export": _export}


def _name(args: argparse.Namespace) -> str:
    return f"voxray {args.command}" + (f" {args.action}" if args.command == "codec" else "")


def user_errors() -> tuple[type[BaseException], ...]:
    """What a command reports as one line and exit status 2: a user's input, config, data or
    cluster is wrong, or a run failed for a reason it names. Anything else is a bug and shows its
    traceback (a bare RuntimeError among them). The types are imported here, when an error
    happened, so that ``--help`` stays fast."""
    from voxray.text import EspeakError
    from voxray.train.engine import NonFiniteError
    from voxray.train.launch import TrainingError
    from voxray.tune.sweep import SweepError

    return (FileNotFoundError, FileExistsError, ValueError, TrainingError, NonFiniteError, SweepError, EspeakError)


if __name__ == "__main__":
    sys.exit(main())
