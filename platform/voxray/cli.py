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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxray", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    pre = commands.add_parser("preprocess", help="corpus -> feature store, with Ray Data")
    pre.add_argument("--input", required=True, help="LJSpeech folder, JSONL manifest or parquet (path or s3://)")
    pre.add_argument("--output", required=True, help="feature store folder (path or s3://)")
    pre.add_argument("--format", choices=["auto", "ljspeech", "jsonl", "hf-parquet"], default=None,
                     help="input format (default: preprocess.format, which defaults to auto)")
    _add_config_args(pre)
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


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        match args.command:
            case "preprocess":
                return _preprocess(args)
    except ConfigError as exc:
        print(f"voxray {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
