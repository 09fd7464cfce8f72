"""Data preparation speed: pieces/s from raw corpus files with num_proc=1 and 2, and the cache-hit load time.

Each measurement starts from an empty cache (parsing + tokenization); the cache-hit time is a second
call on the filled cache. Writes benchmarks/results/data_prep.json.

    python benchmarks/data_prep.py [--pieces-per-style 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from lyria.cli import CONF_DIR
from lyria.data.prepare import prepare_data
from lyria.data.sources import Music21CorpusSource
from lyria.tokenizers import LyriaTokenizer

RESULTS = Path(__file__).resolve().parent / "results"


def _tokenizer() -> LyriaTokenizer:
    cfg = OmegaConf.load(Path(CONF_DIR) / "tokenizer" / "remi.yaml")
    cfg.pop("_target_")
    return LyriaTokenizer(**OmegaConf.to_container(cfg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces-per-style", type=int, default=20)
    args = parser.parse_args()
    styles = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "data" / "music21_multistyle.yaml").source.styles)
    source = Music21CorpusSource(styles)
    runs = {}
    for num_proc in (1, 2):
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            prepared = prepare_data(source, _tokenizer(), cache, max_pieces_per_style=args.pieces_per_style, num_proc=num_proc)
            cold = time.perf_counter() - started
            pieces = prepared.report["pieces_listed"]
            started = time.perf_counter()
            again = prepare_data(source, _tokenizer(), cache, max_pieces_per_style=args.pieces_per_style, num_proc=num_proc)
            warm = time.perf_counter() - started
            assert again.report["cache_hit"]
            runs[f"num_proc={num_proc}"] = {
                "pieces": pieces,
                "skipped": prepared.report["skipped_count"],
                "cold_seconds": round(cold, 2),
                "pieces_per_second": round(pieces / cold, 2),
                "cache_hit_seconds": round(warm, 3),
            }
            print(f"num_proc={num_proc}: {runs[f'num_proc={num_proc}']}", flush=True)
    result = {
        "benchmark": "data_prep",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "pieces_per_style": args.pieces_per_style,
        "runs": runs,
        "speedup_2_vs_1": round(runs["num_proc=2"]["pieces_per_second"] / runs["num_proc=1"]["pieces_per_second"], 2),
        "cache_hit_vs_cold": round(runs["num_proc=2"]["cache_hit_seconds"] / runs["num_proc=2"]["cold_seconds"], 4),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_prep.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
