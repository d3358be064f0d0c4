"""Output folders written atomically: built in a temporary folder beside the target, renamed into place at the end.

:func:`check_output` refuses a target before anything is read in full (an existing folder without ``overwrite``, or
one that is, holds or lies inside an ingredient's folder); :func:`atomic_folder` yields the temporary folder and
claims the target only when the block finishes, so an interrupted write leaves no output folder and nothing of ours
behind; :func:`remove_stale_temporaries` removes the temporary folders of killed runs.

Example:
    >>> with atomic_folder(Path("soup"), overwrite=True) as tmp:
    ...     _ = (tmp / "config.json").write_text("{}")
    ...     Path("soup").exists()
    False
    >>> [path.name for path in Path("soup").iterdir()]
    ['config.json']
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hf_soups.errors import SoupError
from hf_soups.validation import check_folders_apart, output_folder

if TYPE_CHECKING:
    from hf_soups.ingredient import Ingredient

TMP_SUFFIX = ".hf-soups-tmp"  # our temporary folders: ``.NAME.PID.RANDOM.hf-soups-tmp`` beside the target
NAME_MAX = 255  # bytes in one file or folder name (ext4, XFS, btrfs; APFS and NTFS count characters)
TMP_ROOM = 40  # what a temporary folder's name adds to NAME: dots, a PID, 8 random characters, TMP_SUFFIX


def fitted_name(name: str, room: int = 0) -> str:
    """``name``, shortened when it leaves less than ``room`` bytes of :data:`NAME_MAX` for what is added to it (a
    temporary folder's or a state folder's name made from a folder's): cut, and ended by ``~`` and 8 hex digits of
    its sha256, so two long names stay apart.

    Example:
        >>> fitted_name("soup", room=20)
        'soup'
        >>> len(fitted_name("a" * 300, room=20).encode())
        235
    """
    encoded = name.encode()
    if len(encoded) <= NAME_MAX - room:
        return name
    tail = "~" + hashlib.sha256(encoded).hexdigest()[:8]
    return encoded[: NAME_MAX - room - len(tail)].decode(errors="ignore") + tail


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` that becomes ``target`` only if the block finishes.

    The target is claimed atomically at the end: without ``overwrite``, a folder that appeared there meanwhile (a
    concurrent merge, anything) is left alone and the write is refused. On any exception (Ctrl-C included) the
    temporary folder is removed; after a SIGKILL a hidden ``.NAME.PID.*.hf-soups-tmp`` folder remains, and the next
    write to ``target`` removes it once process PID is gone (:func:`remove_stale_temporaries`).

    Raises:
        SoupError: ``target`` exists (or appeared) and ``overwrite`` is false; the folder cannot be written.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise SoupError(f"output folder {target} exists (pass overwrite=True / --overwrite to replace it)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        tmp = _temporary(target)
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the soup gets what save_pretrained's folder would
    except OSError as err:
        raise SoupError(f"output folder {target}: cannot be created ({err.strerror}: {err.filename})") from None
    try:
        yield tmp
        if overwrite and (target.exists() or target.is_symlink()):
            _replace(tmp, target)
        else:
            _claim(tmp, target)
    except OSError as err:
        raise SoupError(f"output folder {target}: cannot be written ({err.strerror}: {err.filename})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed into place


def _temporary(target: Path) -> Path:
    """A new empty folder ``.NAME.PID.RANDOM.hf-soups-tmp`` beside ``target``."""
    prefix = f".{fitted_name(target.name, TMP_ROOM)}.{os.getpid()}."
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=TMP_SUFFIX, dir=target.parent))


def _replace(tmp: Path, target: Path) -> None:
    """Put ``tmp`` in the place of the existing ``target``, which is moved aside first and back if that fails.

    The folder it is moved aside into is removed whatever happens, unless the old target could not be moved back
    (then it stays there, whole).
    """
    old = _temporary(target)
    try:
        target.rename(old / target.name)
    except OSError:
        old.rmdir()  # still empty: the target did not move (a read-only mount, a mount point)
        raise
    try:
        _claim(tmp, target)
    except SoupError:
        with contextlib.suppress(OSError):
            (old / target.name).rename(target)
            old.rmdir()
        raise
    shutil.rmtree(old)


def _claim(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target`` only if nothing is there: ``mkdir`` claims the name atomically, and a folder
    renamed onto an empty folder replaces it in one step (POSIX)."""
    try:
        target.mkdir()
    except FileExistsError:
        raise SoupError(
            f"output folder {target} appeared while the soup was being made (another process?); it was left as it "
            "is and nothing was written"
        ) from None
    try:
        tmp.rename(target)
    except OSError:
        with contextlib.suppress(OSError):
            target.rmdir()  # only if still empty: whatever someone put there stays
        raise SoupError(
            f"output folder {target} was written to by someone else meanwhile; it was left as it is"
        ) from None


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary folders of ``target`` left by hf-soups processes that were killed (their PID is gone).

    Returns:
        The folders removed.
    """
    removed, name = [], fitted_name(Path(target).name, TMP_ROOM)
    for candidate in Path(target).parent.glob(f".{glob.escape(name)}.*{TMP_SUFFIX}"):
        pid, *rest = candidate.name[len(name) + 2 : -len(TMP_SUFFIX)].split(".")
        if (
            len(rest) == 1
            and pid.isdigit()
            and candidate.is_dir()
            and not candidate.is_symlink()
            and not pid_alive(int(pid))
        ):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def check_output(output_dir: str | Path, ingredients: Sequence[Ingredient], overwrite: bool = False) -> Path:
    """Check a soup's output folder before anything is read in full: a folder name to create, not existing unless
    ``overwrite``, and never one of the ``ingredients``' folders, inside one, or holding one (whatever ``overwrite``).

    Raises:
        SoupError: naming the output folder (and the ingredient).
    """
    output_dir = output_folder(output_dir)
    if output_dir.exists() and not overwrite:
        raise SoupError(f"output folder {output_dir} exists (pass overwrite=True / --overwrite to replace it)")
    parts = [part for i in ingredients for part in (i, getattr(i, "base", None)) if part is not None]
    folders = [(part.label, folder) for part in parts for folder in (part.path, part.tokenizer_path)]
    check_folders_apart(output_dir, folders)
    return output_dir
