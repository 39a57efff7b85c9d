"""absl flags generated from RunSpec's fields, and the data flags every run command shares.

One flag per RunSpec field, named like the field, with the field's help text, choices and default:
adding a setting to RunSpec adds it to every command line, and no list of names or choices is
spelled twice. reproduce/run_fold.py takes RunSpec's defaults (the paper's); run_experiment.py
defines the same flags with no default, meaning "the profile's value".
"""

from __future__ import annotations

from absl import flags

from csr.sources import DataPlaces
from csr.spec import FIELDS, RunSpec

# RunSpec field type (as annotated) -> absl flag definer.
_DEFINERS = {"str": flags.DEFINE_string, "str | None": flags.DEFINE_string, "int": flags.DEFINE_integer,
             "int | None": flags.DEFINE_integer, "float": flags.DEFINE_float, "float | None": flags.DEFINE_float,
             "bool": flags.DEFINE_bool, "tuple": flags.DEFINE_list}


def define_spec_flags(names, *, with_defaults: bool = True, flag_values=flags.FLAGS) -> None:
    """One flag per RunSpec field in `names`; without defaults every flag starts as None."""
    for name in names:
        f = FIELDS[name]
        default = _flag_value(f.default) if with_defaults else None
        help_text = f.metadata["help"] + ("" if with_defaults else " (default: the profile's)")
        choices = f.metadata["choices"]
        if choices and f.type == "str":
            flags.DEFINE_enum(name, default, list(choices), help_text, flag_values=flag_values)
        else:
            _DEFINERS[f.type](name, default, help_text, flag_values=flag_values)


def spec_values(names, flag_values=flags.FLAGS, *, given_only: bool = False) -> dict:
    """{field: value} of the spec flags; with given_only, only the flags that are not None."""
    values = {name: flag_values[name].value for name in names}
    if given_only:
        values = {k: v for k, v in values.items() if v is not None}
    return values


def spec_from_flags(names, flag_values=flags.FLAGS) -> RunSpec:
    """The RunSpec the command line describes (fields not in `names` keep their defaults)."""
    return RunSpec(**spec_values(names, flag_values))


def _flag_value(default):
    if isinstance(default, tuple):
        return [f"{v:g}" if isinstance(v, float) else str(v) for v in default]
    return default


def define_data_flags(flag_values=flags.FLAGS) -> None:
    """--data_root, --esc50_root, --us8k_root, --cache_dir, --download (csr.sources.DataPlaces)."""
    places = DataPlaces()
    flags.DEFINE_string("data_root", places.data_root,
                        "Folder holding ESC-50/ and UrbanSound8K/ (downloaded if missing).", flag_values=flag_values)
    flags.DEFINE_string("esc50_root", None, "Override: a folder in ESC-50's layout (meta/esc50.csv, audio/).",
                        flag_values=flag_values)
    flags.DEFINE_string("us8k_root", None, "Override: a folder in UrbanSound8K's layout.", flag_values=flag_values)
    flags.DEFINE_string("cache_dir", None, "Waveform cache folder (default: <data_root>/cache).",
                        flag_values=flag_values)
    flags.DEFINE_bool("download", True, "Download a missing dataset into --data_root before training.",
                      flag_values=flag_values)


def data_places(flag_values=flags.FLAGS) -> DataPlaces:
    return DataPlaces(data_root=flag_values.data_root, esc50_root=flag_values.esc50_root,
                      us8k_root=flag_values.us8k_root, cache_dir=flag_values.cache_dir)
