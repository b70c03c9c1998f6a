"""Tell a missing, truncated or corrupt checkpoint file apart before (or when) loading it.

``torch.save`` writes a zip archive whose central directory sits at the very end of the
file, so a partial download or copy lacks it. torch then reports
``PytorchStreamReader failed reading zip archive: failed finding central directory``
(an empty file gives a bare ``EOFError``, an HTML error page a ``KeyError: 101``;
measured with torch 2.14.1 and MMEngine's ``CheckpointLoader``), which names neither the
file nor the fix; and a flipped bit inside tensor data is loaded silently (torch does
not check the CRC-32 it records). :func:`check_checkpoint_file` reads the zip directory
and checks each member's CRC-32 (no unpickling) and raises :class:`CheckpointFileError`
naming the path, what is wrong and what to do; :func:`explain_load_error` turns the
errors torch raises for damage that check cannot see (the legacy pickle format cut
short) into the same message.

Remote checkpoints (``http://``, ``open-mmlab://``, ``s3://`` ...) are left to MMEngine.
"""
import os
import os.path as osp
import pickle
import zipfile
import zlib
from typing import Optional

ZIP_MAGIC = b'PK\x03\x04'  # torch.save since torch 1.6
PICKLE_MAGIC = b'\x80'  # legacy torch.save format (_use_new_zipfile_serialization=False)
# Substrings of torch's own messages for damaged files.
_TORCH_CORRUPTION = ('PytorchStreamReader failed', 'failed finding central directory',
                     'CRC-32', 'invalid header or archive is corrupted',
                     'pickle data was truncated', 'unexpected EOF', 'Ran out of input')


class CheckpointFileError(RuntimeError):
    """A checkpoint file exists but is truncated, corrupt or not a PyTorch file."""


def _fix(what: str, fix: Optional[str] = None) -> str:
    return fix or (f'Re-download or re-copy {what} (compare its size and sha256 with the '
                   'source), or re-run the training that wrote it.')


def is_local(path: str) -> bool:
    """Whether ``path`` names a local file rather than a URL / MMEngine model-zoo prefix."""
    return '://' not in str(path)


def _bad_crc_member(archive: zipfile.ZipFile, chunk: int = 1 << 24) -> Optional[str]:
    """Name of the first member whose data does not match its recorded CRC-32."""
    for info in archive.infolist():
        if info.CRC == 0 and info.file_size:  # written with torch's CRC-32 turned off
            continue
        try:
            with archive.open(info) as member:  # zipfile checks the CRC at the end
                while member.read(chunk):
                    pass
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
            return info.filename
    return None


def check_checkpoint_file(path: str, what: str = 'checkpoint', fix: Optional[str] = None,
                          verify_crc: bool = True) -> None:
    """Raise, naming ``path`` and the fix, if a local checkpoint is missing or damaged.

    Checks that the file exists and is a file; that it is not empty; that a zip-format
    file (``torch.save``) has its central directory (it is missing when the file was cut
    short) and, with ``verify_crc``, that every member matches its CRC-32; otherwise that
    the file starts like a legacy ``torch.save`` pickle. URLs and model-zoo prefixes are
    not checked.

    Args:
        path (str): The checkpoint file.
        what (str): How to call it in messages, e.g. ``'teacher_checkpoint'``. Defaults
            to 'checkpoint'.
        fix (str, optional): The advice for a missing or damaged file. Defaults to None
            (check the path; re-download or re-copy a damaged file).
        verify_crc (bool): Also read every member and compare its CRC-32 (about 1 s per
            GB; torch does not check it and loads flipped bits silently). Defaults to
            True.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointFileError: ``path`` is a directory, empty, truncated or not a PyTorch
            checkpoint.

    Examples:
        >>> import os, tempfile, torch
        >>> path = os.path.join(tempfile.mkdtemp(), 'w.pth')
        >>> torch.save({'w': torch.zeros(64)}, path)
        >>> check_checkpoint_file(path)
        >>> data = open(path, 'rb').read()
        >>> _ = open(path, 'wb').write(data[:len(data) // 2])
        >>> try:
        ...     check_checkpoint_file(path)
        ... except CheckpointFileError as err:
        ...     print(str(err).split(': ')[0].replace(path, 'PATH'))
        checkpoint 'PATH' is truncated or corrupt
    """
    if not is_local(path):
        return
    if not osp.exists(path):
        raise FileNotFoundError(
            f'{what} {path!r} does not exist (relative paths start at {os.getcwd()}). '
            + (fix or 'Check the path, or download / train the checkpoint first.'))
    if osp.isdir(path):
        raise CheckpointFileError(f'{what} {path!r} is a directory; pass the .pth file')
    size = osp.getsize(path)
    if size == 0:
        raise CheckpointFileError(f'{what} {path!r} is empty (0 bytes): the write or '
                                  f'download did not complete. {_fix(what, fix)}')
    with open(path, 'rb') as f:
        head = f.read(16)
    if head.startswith(ZIP_MAGIC):
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise CheckpointFileError(
                f'{what} {path!r} is truncated or corrupt: {size} bytes and its zip '
                f'directory, which torch.save writes at the end, is missing or unreadable '
                f'({err}); the download or copy was probably interrupted. '
                f'{_fix(what, fix)}') from None
        with archive:
            bad = _bad_crc_member(archive) if verify_crc else None
        if bad is not None:
            raise CheckpointFileError(
                f'{what} {path!r} is corrupt: its member {bad!r} does not match the CRC-32 '
                f'torch.save recorded (torch itself would load the damaged values '
                f'silently). {_fix(what, fix)}')
        return
    if not head.startswith(PICKLE_MAGIC):
        raise CheckpointFileError(
            f'{what} {path!r} is not a PyTorch checkpoint: it starts with {head!r} '
            '(a zip archive or a pickle was expected; an HTML or text file usually '
            f'means a failed download). {_fix(what, fix)}')


def explain_load_error(path: str, err: BaseException, what: str = 'checkpoint',
                       fix: Optional[str] = None) -> Optional[CheckpointFileError]:
    """:class:`CheckpointFileError` for an error torch raised on a damaged file, else None.

    Security refusals (``Weights only load failed``) are not damage and give None.

    Examples:
        >>> explain_load_error('w.pth', EOFError('Ran out of input')) is not None
        True
        >>> explain_load_error('w.pth', ValueError('bad shape')) is None
        True
    """
    text = f'{type(err).__name__}: {err}'
    if 'Weights only load failed' in text:
        return None
    damaged = isinstance(err, EOFError) or (
        isinstance(err, (RuntimeError, pickle.UnpicklingError, OSError))
        and any(s in text for s in _TORCH_CORRUPTION))
    if not damaged:
        return None
    first = text.splitlines()[0][:200]
    return CheckpointFileError(f'{what} {path!r} is truncated or corrupt: torch could not '
                               f'read it ({first}). {_fix(what, fix)}')
