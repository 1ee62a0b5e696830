"""``voxray <command>``: the command line. Each command is a thin shell over a library call."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from voxray.config import ConfigError, load_config


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (local path or s3:// URI)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted config overrides, e.g. preprocess.min_seconds=1.0")


def _family_parser(commands, command: str, command_help: str, acoustic_help: str,
                   output_help: str) -> argparse.ArgumentParser:
    """``voxray COMMAND acoustic --data STORE --output URI``: commands that take a model family."""
    families = commands.add_parser(command, help=command_help).add_subparsers(dest="family", required=True)
    family = families.add_parser("acoustic", help=acoustic_help)
    family.add_argument("--data", required=True, help="feature store (path or s3://)")
    family.add_argument("--output", required=True, help=output_help)
    return family


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxray", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    pre = commands.add_parser("preprocess", help="corpus -> feature store, with Ray Data")
    pre.add_argument("--input", required=True, help="LJSpeech folder, JSONL manifest or parquet (path or s3://)")
    pre.add_argument("--output", required=True, help="feature store folder (path or s3://)")
    pre.add_argument("--format", choices=["auto", "ljspeech", "jsonl", "hf-parquet"], default=None,
                     help="input format (default: preprocess.format, which defaults to auto)")
    _add_config_args(pre)

    train = _family_parser(commands, "train", "train a model from a feature store on Ray Train + DeepSpeed",
                           "FastSpeech2-family acoustic model: phonemes -> mel",
                           "run folder (path or s3://); re-running on it resumes from its latest checkpoint")
    _add_config_args(train)

    sweep = _family_parser(commands, "tune", "sweep hyperparameters with Ray Tune + Optuna (TPE) + ASHA",
                           "sweep the acoustic model's training",
                           "sweep folder (path or s3://); re-running on it resumes the sweep")
    sweep.add_argument("--trials", type=int, required=True, help="number of trials")
    sweep.add_argument("--search-space", help="YAML search space (default: lr and loss weights, "
                                              "plus lora.rank when finetune.init_from is set)")
    _add_config_args(sweep)

    synth = commands.add_parser("synthesize", help="text -> waveform with an exported acoustic model")
    synth.add_argument("--model", required=True, help="RUN_URI/final of a trained acoustic model")
    synth.add_argument("--text", required=True)
    synth.add_argument("--speaker", help="speaker name (default: the model's first speaker)")
    synth.add_argument("--language", help="language (default: the model's first language)")
    synth.add_argument("--pace", type=float, default=1.0, help=">1 speaks faster")
    synth.add_argument("--out", required=True, help="output .wav (path or s3://)")
    return parser


def _preprocess(args: argparse.Namespace) -> int:
    from voxray.data.pipeline import OutputError, preprocess
    from voxray.data.readers import InputError

    config = load_config(args.config, args.overrides)
    try:
        stats = preprocess(args.input, args.output, config, fmt=args.format)
    except (InputError, OutputError) as exc:
        print(f"voxray preprocess: error: {exc}", file=sys.stderr)
        return 2
    splits = ", ".join(f"{name} {s['utterances']} ({s['audio_seconds']:.1f} s)"
                       for name, s in stats["splits"].items())
    print(f"\nfeature store: {args.output}")
    print(f"  input rows {stats['input_rows']}: kept {stats['kept']}, rejected {stats['rejected']}, "
          f"malformed {stats['malformed']}")
    if stats["rejected_by_reason"]:
        print(f"  rejected by reason: {json.dumps(stats['rejected_by_reason'])}")
    print(f"  splits: {splits}")
    languages = ", ".join(f"{name} ({info['g2p']})" for name, info in stats["languages"].items())
    print(f"  speakers {len(stats['speakers'])}, languages {languages}, "
          f"vocabulary {len(stats['vocabulary'])} tokens")
    print(f"  {stats['audio_seconds']:.1f} s of audio in {stats['wall_seconds']:.1f} s")
    return 0


def _train(args: argparse.Namespace) -> int:
    from voxray.train.loop import NonFiniteError
    from voxray.train.recipes import acoustic

    config = load_config(args.config, args.overrides)
    try:
        summary = acoustic.train(args.data, args.output, config)
    except (FileNotFoundError, ValueError, acoustic.TrainingError, NonFiniteError) as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"voxray train: error: {exc}", file=sys.stderr)
        return 2
    print(f"\nrun: {summary['run']}")
    print(f"  step {summary['step']}, val mel L1 {summary['val_mel']:.4f}")
    for path, val_mel, step in summary["best"]:
        print(f"  checkpoint step {step}: val mel L1 {val_mel:.4f}  {path}")
    print(f"  model: {summary['final']}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from voxray.tune.sweep import tune_acoustic

    config = load_config(args.config, args.overrides)
    try:
        summary = tune_acoustic(args.data, args.output, args.trials, config, args.search_space)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"voxray tune: error: {exc}", file=sys.stderr)
        return 2
    print(f"\nsweep: {summary['sweep']}  ({summary['space']})")
    for row in summary["trials"]:
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    print(f"  best: {summary['best']['trial']} val mel L1 {summary['best']['best_val_mel']:.4f}")
    print(f"  train it with: voxray train acoustic --config {summary['best_yaml']} --data ... --output ...")
    return 0


def _synthesize(args: argparse.Namespace) -> int:
    from voxray.synthesize import SynthesisError, load_voice, synthesize, write_wav

    try:
        voice = load_voice(args.model)
        audio, mel = synthesize(voice, args.text, speaker=args.speaker, language=args.language, pace=args.pace)
    except (FileNotFoundError, SynthesisError) as exc:
        print(f"voxray synthesize: error: {exc}", file=sys.stderr)
        return 2
    rate = voice.final.audio_spec.sample_rate
    write_wav(args.out, audio, rate)
    print(f"{args.out}: {len(audio) / rate:.2f} s, {len(mel)} mel frames")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        match args.command:
            case "preprocess":
                return _preprocess(args)
            case "train":
                return _train(args)
            case "tune":
                return _tune(args)
            case "synthesize":
                return _synthesize(args)
    except ConfigError as exc:
        print(f"voxray {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
