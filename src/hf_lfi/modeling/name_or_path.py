"""Every name is a Hub id or a local path: the one rule for models, datasets, interaction datasets and teachers.

- a name that is an existing path (after `~` expansion) is a local folder or file;
- a missing path that looks like one (`./`, `../`, `/`, `~`, or a separator where a Hub id cannot have one) is an
  error "No folder at ...", never a Hub lookup;
- anything else is a Hub id, checked with one request before the library loads it: an unknown repository, an
  unreachable Hub or an offline Hub without a cached copy is one line naming the id and the offline setting, instead
  of minutes of retries and a traceback.

It lives beside the models because `from_vit` & co. take names too, and travels with their remote code (it imports
only `huggingface_hub`).
"""

import os

from huggingface_hub import HfApi, constants, is_offline_mode, try_to_load_from_cache
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import httpx, validate_repo_id

# seconds the Hub may take to answer the one check of a Hub id
HUB_CHECK_TIMEOUT = 10.0
_TRUE = ("1", "ON", "YES", "TRUE")


class NameOrPathError(OSError):
    """A name that is neither an existing path nor a Hub repository this process can load; the message is one line."""


def looks_like_path(name: str) -> bool:
    """Whether `name` is written as a path (`./x`, `../x`, `/x`, `~/x`, `a/b/c`, `.`), so it must not go to the Hub."""
    separators = tuple({os.sep, os.altsep or os.sep})
    starts = ("~", *separators, *(f".{s}" for s in separators), *(f"..{s}" for s in separators))
    if name in (".", "..") or name.startswith(starts):
        return True
    if os.sep != "/" and os.sep in name:  # a Hub id has no separator but "/"
        return True
    if "/" not in name:
        return False
    try:  # "org/name" is both a relative path and a Hub id: a Hub id unless it exists (checked before)
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def is_repo_id(name: str | None) -> bool:
    """Whether `name` goes to the Hub under this module's rule (no existing path, not written as a path, a valid
    repository id), without asking the Hub: how a model card tells a Hub id from a local folder."""
    if not name or os.path.exists(os.path.expanduser(name)) or looks_like_path(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _offline_setting(repo_type: str) -> str | None:
    """The variable that makes this process offline for `repo_type`, if one does."""
    names = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"] + (["HF_DATASETS_OFFLINE"] if repo_type == "dataset" else [])
    for name in names:
        if os.environ.get(name, "").upper() in _TRUE:
            return name
    return "HF_HUB_OFFLINE" if is_offline_mode() else None


def is_cached(repo_id: str, repo_type: str = "model", revision: str | None = None) -> bool:
    """Whether the local Hugging Face cache holds `repo_id`: a model's config, or a dataset that `datasets` prepared
    (its cache folder `namespace___name`) or whose files were downloaded."""
    if repo_type == "model":
        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    datasets_cache = os.environ.get("HF_DATASETS_CACHE") or os.path.join(constants.HF_HOME, "datasets")
    hub_folder = os.path.join(constants.HF_HUB_CACHE, f"{repo_type}s--{repo_id.replace('/', '--')}", "snapshots")
    return os.path.isdir(os.path.join(datasets_cache, repo_id.replace("/", "___"))) or os.path.isdir(hub_folder)


def resolve_name_or_path(name: str | os.PathLike, repo_type: str = "model", revision: str | None = None) -> str:
    """What to hand to `from_pretrained` / `load_dataset` for `name`: the local path (with `~` expanded) when it
    exists, else the Hub id once the Hub (or, offline, the local cache) is known to have it.

    Raises `NameOrPathError` with a one-line message for a missing path, a name that is no Hub id, a repository the
    Hub does not have (or not at `revision`), an unreachable Hub, and an offline Hub without a cached copy.
    """
    name = os.fspath(name)
    path = os.path.expanduser(name)
    if os.path.exists(path):
        return path
    if looks_like_path(name):
        raise NameOrPathError(f"No folder at {name!r} ({os.path.abspath(path)}).")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise NameOrPathError(
            f"{name!r} is neither an existing path nor a Hub {repo_type} id ('name' or 'namespace/name')."
        ) from None
    where = f"the Hub ({constants.ENDPOINT})"
    offline = _offline_setting(repo_type)
    if offline is not None:
        if is_cached(name, repo_type, revision):
            return name
        raise NameOrPathError(
            f"{name!r} is no local path and the Hugging Face cache has no copy of it, while {offline}=1 keeps "
            f"{where} offline: unset {offline} to download it, or pass a local folder."
        )
    try:
        HfApi().repo_info(name, repo_type=repo_type, revision=revision, timeout=HUB_CHECK_TIMEOUT)
    except GatedRepoError:
        raise NameOrPathError(
            f"The {repo_type} {name!r} on {where} is gated: accept its conditions on its page and log in "
            "(`hf auth login` or HF_TOKEN)."
        ) from None
    except RepositoryNotFoundError:
        raise NameOrPathError(
            f"No {repo_type} {name!r} on {where}, and no local folder of that name (a private repository needs a "
            "login: `hf auth login` or HF_TOKEN)."
        ) from None
    except RevisionNotFoundError:
        raise NameOrPathError(f"The {repo_type} {name!r} on {where} has no revision {revision!r}.") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "an error"
        raise NameOrPathError(f"{where} answered {status} for the {repo_type} {name!r}.") from None
    except (httpx.HTTPError, OSError) as error:
        cache = (
            "which holds a copy" if is_cached(name, repo_type, revision) else "which has no copy: pass a local folder"
        )
        raise NameOrPathError(
            f"Cannot reach {where} for the {repo_type} {name!r} ({type(error).__name__}); set HF_HUB_OFFLINE=1 to "
            f"load it from the local cache, {cache}."
        ) from None
    return name


__all__ = ["NameOrPathError", "is_cached", "is_repo_id", "looks_like_path", "resolve_name_or_path"]
