"""`lyria-export ckpt=PATH output_dir=DIR`: a checkpoint as a folder of safetensors weights, YAML config and
tokenizer JSON that `lyria-generate ckpt=DIR` loads (nothing in it is executable)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lyria.cli import CONF_DIR, run_cli, user_errors
from lyria.config import ExportSchema, validate


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="export")
def _main(cfg: DictConfig) -> None:
    with user_errors("lyria-export"):
        cfg = validate(cfg, ExportSchema)
        from lyria.export import export_model

        folder = export_model(cfg.ckpt, cfg.output_dir, overwrite=cfg.overwrite)
    print(f"exported {cfg.ckpt} to {folder} ({', '.join(sorted(p.name for p in folder.iterdir()))})")


def main() -> None:
    run_cli(_main, "lyria-export")


if __name__ == "__main__":
    main()
