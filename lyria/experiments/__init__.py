"""Studies: a training run that ends with a fixed seeded sample set and its evaluation (`study:` in conf/train.yaml)."""

from lyria.experiments.study import EVALUATION_DIR, SAMPLES_DIR, StudyConfigs, check_study, run_study, study_configs

__all__ = ["EVALUATION_DIR", "SAMPLES_DIR", "StudyConfigs", "check_study", "run_study", "study_configs"]
