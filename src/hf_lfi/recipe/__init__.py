"""The training recipe behind `hf-lfi train` (and `training/run.py`, `python -m hf_lfi.recipe`): arguments and
config files, the model, data, teacher and metric builders, and `main`, split per task. Scripts, benchmarks and tests
call this API."""

from .arguments import (
    CONFIGS_DIR,
    DataArguments,
    ModelArguments,
    build_parser,
    check_arguments,
    config_overrides,
    config_path,
    parse_arguments,
    read_config_file,
    shipped_configs,
)
from .data import detection_rows, label_names, load_data
from .evaluation import classification_metrics, detection_metrics
from .models import build_image_processor, build_model, continue_student
from .records import RUN_CONFIG_NAME, check_output_dir, check_resume, read_run_config, run_record, write_run_config
from .run import TaskSetup, main, setup_classification, setup_detection, train_and_evaluate
from .teachers import build_online_teacher, prepare_teacher

__all__ = [
    "CONFIGS_DIR",
    "RUN_CONFIG_NAME",
    "DataArguments",
    "ModelArguments",
    "TaskSetup",
    "build_image_processor",
    "build_model",
    "build_online_teacher",
    "build_parser",
    "check_arguments",
    "check_output_dir",
    "check_resume",
    "classification_metrics",
    "config_overrides",
    "config_path",
    "continue_student",
    "detection_metrics",
    "detection_rows",
    "label_names",
    "load_data",
    "main",
    "parse_arguments",
    "prepare_teacher",
    "read_config_file",
    "read_run_config",
    "run_record",
    "setup_classification",
    "setup_detection",
    "shipped_configs",
    "train_and_evaluate",
    "write_run_config",
]
