"""`tinynet data verify [--data-dir DIR]`: check every known data file (size,
SHA-256, MD5) and print a table."""
import os

import click

from tinynet.data import ENV, PACKAGE_MNIST, DataError, checksums, verify


@click.group("data")
def data():
    """Data files: check them."""


@data.command("verify")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help=f"folder to check (default: the MNIST copy inside the package, and ${ENV} if set)")
def verify_cmd(data_dir):
    """Check every known MNIST / CIFAR-10 file found in a folder (the folder itself,
    mnist/, cifar-10-batches-py/ or cifar10/cifar-10-batches-py/). Exits with
    status 1 if a file present is truncated or corrupt, or if none is found."""
    dirs = [data_dir] if data_dir else [PACKAGE_MNIST] + ([os.environ[ENV]] if os.environ.get(ENV) else [])
    bad = found = md5_only = 0
    for d in dirs:
        try:
            rows = verify(d)
        except DataError as e:
            raise click.ClickException(str(e))
        if d == PACKAGE_MNIST:      # the package ships MNIST only
            rows = [r for r in rows if r["dataset"] == "mnist"]
        click.echo(f"{d}:")
        click.echo(f"  {'dataset':8} {'file':28} {'bytes':>12}  status")
        for r in rows:
            size = f"{r['bytes']:,}" if r["bytes"] is not None else "-"
            status = r["status"] if r["status"] in ("ok", "missing") else "BAD: " + r["status"]
            click.echo(f"  {r['dataset']:8} {r['name']:28} {size:>12}  {status}")
            found += r["path"] is not None
            md5_only += r["status"] == "ok" and checksums.BY_NAME[r["name"]].sha256 is None
            bad += r["status"] not in ("ok", "missing")
    if bad:
        raise click.ClickException(f"{bad} file(s) failed the check")
    if not found:
        raise click.ClickException("no known data file found")
    click.echo(f"{found} file(s) ok" + (f" ({md5_only} checked by MD5 alone: their SHA-256 is not recorded)"
                                        if md5_only else ""))
