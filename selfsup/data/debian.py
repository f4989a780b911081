"""Files from Debian packages, without root: ``apt-get download PACKAGE`` unpacked with ``dpkg -x``.

Used by ``selfsup data get`` for the sets Debian ships (fashion-mnist, klettres, the R packages' sequence sets).
Nothing is installed: the .deb is downloaded into a temporary folder and unpacked there. On a fresh machine whose
package lists are empty the first download fails; as root, ``apt-get update -qq`` runs once and the download is
tried again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def available() -> bool:
    """apt-get and dpkg are both on this machine."""
    return bool(shutil.which("apt-get") and shutil.which("dpkg"))


def apt_download(package: str, tmp: str | Path) -> Path | None:
    """``apt-get download PACKAGE`` into ``tmp`` and ``dpkg -x`` it into ``tmp/x``: that folder (the package's
    files under their installed paths, e.g. ``x/usr/share/...``), or None where apt-get or dpkg is missing or the
    download fails."""
    if not available():
        return None
    tmp = Path(tmp)
    r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True)
    if r.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:  # fresh machine: empty lists
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True)
    debs = sorted(tmp.glob(f"{package}_*.deb"))
    if r.returncode != 0 or not debs:
        return None
    subprocess.run(["dpkg", "-x", str(debs[0]), str(tmp / "x")], check=True, capture_output=True)
    return tmp / "x"


__all__ = ["apt_download", "available"]
