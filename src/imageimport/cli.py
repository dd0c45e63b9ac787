"""The `imageimport` command."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from imageimport import db
from imageimport.db.models import Image
from imageimport.errors import ImageImportError
from imageimport.pipeline.modes import MODE_OPTION
from imageimport.settings import ImportMode, Settings

if TYPE_CHECKING:
    from imageimport.runtime import Runtime
    from imageimport.services.embedded import Snapshot
    from imageimport.services.imports import Importer
    from imageimport.services.stack import Services

app = typer.Typer(
    help="Import images from public Google Drive and Dropbox folders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        lines = [f"  {'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors()]
        console.print("[red]Invalid configuration:[/red]\n" + escape("\n".join(lines)))
        raise typer.Exit(2) from None


def _runtime(settings: Settings) -> Runtime:
    from imageimport.runtime import Runtime

    return Runtime(settings)


def _services(settings: Settings) -> Services[Runtime]:
    from imageimport.services.stack import open_services

    return open_services(settings)


def _fail(error: ImageImportError, code: int = 2) -> typer.Exit:
    _print_error(str(error))
    return typer.Exit(code)


def _print_error(message: str) -> None:
    # Messages quote links and names strangers chose: no markup, no control characters.
    # One line however long (soft_wrap): logs and scripts see the sentence whole.
    console.print(f"[red]Error:[/red] {escape(_printable(message))}", soft_wrap=True)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    # One line per HTTP request drowns everything else, and URLs can carry secrets.
    for noisy in ("httpx", "httpcore", "botocore", "urllib3", "googleapiclient.discovery"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Options the commands that run imports share.
ConcurrencyOption = Annotated[
    int | None, typer.Option("--concurrency", "-c", min=1, max=256, help="Parallel files.")
]
LocalWorkersOption = Annotated[
    bool | None,
    typer.Option(
        "--local-workers/--no-local-workers",
        help="Process files in this process too. Default: yes, unless NATS_URL is set "
        "(then `imageimport worker` processes do the work).",
    ),
]
DetachOption = Annotated[
    bool,
    typer.Option("--detach", help="With NATS_URL: return once the folder is listed and queued."),
]


@app.command("import")
def import_(
    url: Annotated[
        str, typer.Argument(help="A Google Drive folder or Dropbox shared folder link.")
    ],
    concurrency: ConcurrencyOption = None,
    local_workers: LocalWorkersOption = None,
    detach: DetachOption = False,
    mode: Annotated[
        ImportMode | None,
        typer.Option(
            "--mode",
            help="full: decode, verify and thumbnail every image while importing. lean: store "
            "each original and its headers' metadata only; thumbnails are made later. "
            "Default: IMPORT_MODE.",
        ),
    ] = None,
) -> None:
    """Import every image of a folder into the configured store, with a live progress bar.
    Without NATS, an import of the same folder that was interrupted is finished instead."""
    from imageimport.services.embedded import run_import
    from imageimport.sources.registry import parse_folder_url

    settings = _settings()
    if detach and not settings.nats_url:
        console.print("[red]Error:[/red] --detach needs NATS_URL (a queue outside this process).")
        raise typer.Exit(2)
    try:
        parse_folder_url(url)
        services = _services(settings)
    except ImageImportError as error:
        raise _fail(error) from None
    options: dict[str, Any] = {MODE_OPTION: mode} if mode else {}
    if detach:
        _plan_detached(services, lambda importer: importer.start(url, options))
        return

    def resuming(import_id: str) -> None:
        console.print(
            f"Carrying on with import {import_id} of this folder: it was interrupted before "
            "it finished."
        )

    try:
        with _progress() as show:
            result = run_import(
                services.runtime,
                url,
                concurrency or settings.concurrency,
                show,
                queue=services.queue,
                local_workers=local_workers if local_workers is not None else not settings.nats_url,
                on_resume=resuming,
                options=options,
            )
    except ImageImportError as error:
        raise _fail(error) from None
    finally:
        services.close()
    _finish(settings, [result])


@contextmanager
def _progress() -> Iterator[Callable[[Snapshot], None]]:
    """A live progress bar per import; yields the function that takes each import's Snapshot."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[transfer]}"),
        TimeRemainingColumn(),
    )
    started = time.monotonic()
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, TaskID] = {}

        def show(snap: Snapshot) -> None:
            c = snap.counters
            elapsed = max(time.monotonic() - started, 1e-6)
            transfer = (
                f"{c.bytes / 1e6:,.1f} MB  {c.finished / elapsed:,.1f} files/s  "
                f"{c.bytes / 1e6 / elapsed:,.1f} MB/s"
            )
            task = tasks.get(snap.import_id)
            if task is None:
                task = tasks[snap.import_id] = progress.add_task("", total=None, transfer="")
            total = c.discovered if snap.state != "listing" else None
            progress.update(
                task, description=snap.state, completed=c.finished, total=total, transfer=transfer
            )

        yield show


def _finish(settings: Settings, results: list[Snapshot]) -> None:
    """Each import's summary; exit 1 when one of them has no image at all."""
    for result in results:
        _summary(settings, result)
    if any(
        r.counters.imported + r.counters.duplicates + r.counters.unchanged == 0 for r in results
    ):
        raise typer.Exit(1)


def _plan_detached(services: Services[Runtime], begin: Callable[[Importer], str]) -> None:
    """Have `begin` start listing an import (its id), wait until it is listed, and leave
    the files to the workers."""
    from imageimport.services.embedded import snapshot

    try:
        import_id = begin(services.importer)
        services.importer.wait()
        snap = snapshot(services.runtime, import_id)
    finally:
        services.close()
    print(import_id)
    console.print(f"{snap.state}: {snap.counters.discovered} files queued for the workers.")
    if snap.last_sync is not None:
        console.print(_sync_line(snap.last_sync))
    if snap.state == "failed":
        _print_error(snap.error or "")
        raise typer.Exit(1)


@app.command()
def sync(
    import_id: Annotated[
        str, typer.Argument(help="The id of a finished import (`import` prints it).")
    ],
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Delete the images of the files no longer in the folder, unless a file still "
            "in a folder (of this or another import) holds them.",
        ),
    ] = False,
    concurrency: ConcurrencyOption = None,
    local_workers: LocalWorkersOption = None,
    detach: DetachOption = False,
) -> None:
    """List a finished import's folder again into the same import (a sync round): new and
    changed files are imported, unchanged ones are not downloaded, files no longer there
    become gone. Progress, summary and exit codes as `import`'s."""
    from imageimport.services.embedded import run_sync

    settings = _settings()
    if detach and not settings.nats_url:
        console.print("[red]Error:[/red] --detach needs NATS_URL (a queue outside this process).")
        raise typer.Exit(2)
    try:
        services = _services(settings)
    except ImageImportError as error:
        raise _fail(error) from None
    workers = local_workers if local_workers is not None else not settings.nats_url
    try:
        if detach:
            # Closes the services itself.
            _plan_detached(services, lambda importer: _start_sync(importer, import_id, prune))
            return
        try:
            with _progress() as show:
                result = run_sync(
                    services.runtime,
                    import_id,
                    concurrency or settings.concurrency,
                    prune=prune,
                    on_progress=show,
                    queue=services.queue,
                    local_workers=workers,
                )
        finally:
            services.close()
    except ImageImportError as error:
        raise _fail(error) from None
    except LookupError:
        _print_error(f"Import {import_id} does not exist.")
        raise typer.Exit(2) from None
    _finish(settings, [result])


def _start_sync(importer: Importer, import_id: str, prune: bool) -> str:
    importer.sync(import_id, prune=prune, trigger="cli")
    return import_id


def _sync_line(sync: db.SyncRound) -> str:
    return (
        f"Sync round {sync.round}: {sync.added} added, {sync.changed} changed, "
        f"{sync.unchanged} unchanged, {sync.gone} gone, {sync.pruned} images pruned."
    )


@app.command()
def resume(
    concurrency: ConcurrencyOption = None,
) -> None:
    """Finish the imports a crash or restart interrupted. Without NATS, this process does the
    work, with the progress, summary and exit code of `import`; with NATS, it lists again the
    interrupted listings and returns (the workers do the rest)."""
    from imageimport.services.embedded import resume_imports

    settings = _settings()
    try:
        services = _services(settings)
    except ImageImportError as error:
        raise _fail(error) from None
    try:
        if services.queue.durable:
            resumed = services.importer.resume_interrupted()
            services.importer.wait()
            console.print(f"Resumed {len(resumed)} import(s).")
            return
        with _progress() as show:
            results = resume_imports(
                services.runtime, concurrency or settings.concurrency, show, services.queue
            )
    except ImageImportError as error:
        raise _fail(error) from None
    finally:
        services.close()
    if not results:
        console.print("No interrupted import to finish.")
        return
    _finish(settings, results)


@app.command()
def worker(
    concurrency: ConcurrencyOption = None,
) -> None:
    """Process files from NATS JetStream until SIGTERM/SIGINT (the distributed mode)."""
    from imageimport.worker.service import run_worker

    settings = _settings()
    try:
        code = run_worker(settings, concurrency or settings.concurrency)
    except ImageImportError as error:
        raise _fail(error) from None
    raise typer.Exit(code)


@app.command("operator")
def operator_(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Serve ImageImports in this namespace (repeatable). Default: the pod's own.",
        ),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Serve every namespace.")
    ] = False,
    peering: Annotated[
        str | None,
        typer.Option(
            help="The KopfPeering object replicas coordinate through (only one works at a time)."
        ),
    ] = None,
    standalone: Annotated[
        bool, typer.Option("--standalone", help="No peering: run as the only replica.")
    ] = False,
    priority: Annotated[
        int | None,
        typer.Option(help="Peering priority; the highest live replica works. Default: random."),
    ] = None,
    peering_lifetime: Annotated[
        int,
        typer.Option(
            min=2,
            help="Seconds a replica counts as alive after its last keep-alive: how long the "
            "others wait before taking over from one that died.",
        ),
    ] = 60,
) -> None:
    """Run the Kubernetes operator: list each ImageImport's folder for the workers and keep its
    status up to date, until SIGTERM/SIGINT (needs PostgreSQL and NATS)."""
    from imageimport.operator.run import OperatorOptions, run_operator

    settings = _settings()
    options = OperatorOptions(
        tuple(namespace or ()), all_namespaces, peering, standalone, priority, peering_lifetime
    )
    try:
        run_operator(settings, options)
    except ImageImportError as error:
        raise _fail(error) from None


@app.command("queue-setup")
def queue_setup() -> None:
    """Create or update the JetStream stream and the workers' durable consumer, then exit
    (autoscalers such as KEDA need the consumer to exist before any worker starts)."""
    from imageimport.queue import make_queue
    from imageimport.queue.nats import DURABLE, STREAM

    settings = _settings()
    if not settings.nats_url:
        console.print("[red]Error:[/red] queue-setup needs NATS_URL.")
        raise typer.Exit(2)
    try:
        make_queue(settings).close()  # NATS_URL is set: connecting sets the stream up
    except ImageImportError as error:
        raise _fail(error, code=1) from None
    console.print(f"Stream {STREAM} and consumer {DURABLE} are ready.")


def _summary(settings: Settings, result: Any) -> None:
    from imageimport.runtime import Runtime

    c = result.counters
    table = Table(show_header=False)
    for label, value in (
        ("import", result.import_id),
        ("state", result.state),
        ("files found", c.discovered),
        ("imported", c.imported),
        ("duplicates (already stored)", c.duplicates),
        ("unchanged (not downloaded)", c.unchanged),
        ("skipped (not images)", c.skipped),
        ("failed", c.failed),
        ("bytes downloaded", f"{c.bytes:,}"),
    ):
        table.add_row(label, str(value))
    console.print(table)
    if result.last_sync is not None:
        console.print(_sync_line(result.last_sync))
    if result.error:
        _print_error(result.error)
    if c.failed:
        runtime = Runtime(settings, migrate=False, housekeeping=False)
        try:
            with runtime.session() as session:
                failed = db.failed_files(session, result.import_id, 50)
        finally:
            runtime.close()
        console.print("[bold red]Failed files:[/bold red]")
        for path, reason in failed:
            line = f"  {_printable(path)}: {_printable(reason or '')}"
            console.print(line, markup=False, highlight=False)


def _printable(text: str) -> str:
    """Names come from strangers: never let them drive the terminal."""
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in text)


class _PrintableFormatter(logging.Formatter):
    """Log messages quote names strangers chose: a name must not start a fake log line or
    send escape sequences to the terminal. Tracebacks keep their line breaks."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _printable(record.message)
        return super().formatMessage(record)


def _json_printable(text: str) -> str:
    """JSON text whose strings escape every non-printable character: json.dumps leaves C1
    controls, bidi overrides and the like as they are, and terminals obey some of them."""
    return "".join(ch if ch.isprintable() or ch == "\n" else _json_escape(ch) for ch in text)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


# The table stops here unless --limit says otherwise; --json lists every image.
TABLE_ROWS = 1000
# Images read from the database at a time (a keyset page each, in a transaction of its own).
IMAGE_PAGE = 500


@app.command()
def images(
    import_id: Annotated[
        str | None, typer.Option("--import", help="Only this import's images.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Every image, as one JSON array on stdout.")
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"At most this many (default: all with --json, {TABLE_ROWS:,} in the table).",
        ),
    ] = None,
) -> None:
    """List stored images, oldest first."""
    settings = _settings()
    try:
        runtime = _runtime(settings)
    except ImageImportError as error:
        raise _fail(error) from None
    # An image belongs to every import that found it, not only the first.
    where = db.ImageFilter(import_id=import_id or None)
    try:
        if as_json:
            _write_json_array(_image_json(image) for image in _stored_images(runtime, where, limit))
            return
        shown = limit or TABLE_ROWS
        # One more than is shown, to know whether there is more.
        rows = [_image_json(image) for image in _stored_images(runtime, where, shown + 1)]
    except ImageImportError as error:
        raise _fail(error) from None
    finally:
        runtime.close()
    table = Table("id", "name", "format", "size", "dimensions", "taken at", "sha256")
    for row in rows[:shown]:
        table.add_row(
            str(row["id"]),
            _printable(row["path"]),
            row["format"],
            f"{row['size']:,}",
            f"{row['width']}x{row['height']}",
            row["taken_at"] or "",
            row["sha256"][:12],
        )
    Console().print(table)
    if len(rows) > shown:
        console.print(
            f"The first {shown:,} images; --limit shows more, --json lists them all.",
            highlight=False,
        )


def _stored_images(runtime: Runtime, where: db.ImageFilter, limit: int | None) -> Iterator[Image]:
    """The stored images `where` picks, by id, up to `limit`: read a page at a time, so any
    number of them can be streamed."""
    after = None
    left = limit
    while left is None or left > 0:
        size = IMAGE_PAGE if left is None else min(IMAGE_PAGE, left)
        with runtime.session() as session:
            page = db.image_page(session, where, size, after=after)
        yield from page
        if len(page) < size:
            return
        after = page[-1].id
        if left is not None:
            left -= len(page)


def _write_json_array(rows: Iterable[Any]) -> None:
    """What json.dumps(list(rows), indent=2) would write to stdout, an element at a time."""
    opened = False
    for row in rows:
        # Not textwrap.indent: it also breaks lines at the NEL, LS and PS inside names.
        element = "  " + json.dumps(row, ensure_ascii=False, indent=2).replace("\n", "\n  ")
        sys.stdout.write(_json_printable(("," if opened else "[") + "\n" + element))
        opened = True
    sys.stdout.write("\n]\n" if opened else "[]\n")


def _image_json(image: Image) -> dict[str, Any]:
    return {
        "id": image.id,
        "name": image.name,
        "path": image.path,
        "sha256": image.sha256,
        "size": image.size,
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "content_type": image.content_type,
        "taken_at": image.taken_at.isoformat() if image.taken_at else None,
        "camera": image.camera,
        "provider": image.provider,
        "source_file_id": image.source_file_id,
        "object_key": image.object_key,
        "thumbnail_key": image.thumbnail_key,
        "import_id": image.import_id,
        "state": image.state,
    }


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    settings = _settings()
    try:
        db.upgrade(db.make_engine(settings))
    except ImageImportError as error:
        raise _fail(error) from None
    console.print("Database is up to date.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Run the web page, the REST API and workers in one process (the embedded default).
    Without API_TOKEN, anyone may make changes only while it listens on a loopback address
    (the default) or with ALLOW_ANONYMOUS=true."""
    settings = _settings()
    if settings.allow_anonymous is None and _is_loopback(host):
        # Only this machine can connect, and the Host check keeps other sites' pages out.
        settings = settings.model_copy(update={"allow_anonymous": True})
    _run_api(settings, host, port, local_workers=True)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Run the REST API and page without workers, for the distributed mode (needs NATS_URL).
    Without API_TOKEN it refuses changes unless ALLOW_ANONYMOUS=true."""
    settings = _settings()
    if not settings.nats_url:
        console.print(
            "[red]Error:[/red] `imageimport api` runs no workers, so it needs NATS_URL (the queue "
            "`imageimport worker` processes read). Use `imageimport serve` to run everything in "
            "one process."
        )
        raise typer.Exit(2)
    _run_api(settings, host, port, local_workers=False)


@app.command("dev-stack")
def dev_stack(
    data_dir: Annotated[
        Path, typer.Option(help="Where the servers keep their data (reused by later runs).")
    ] = Path(".devstack"),
    api_port: Annotated[int, typer.Option(min=1, max=65535, help="The API's port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 2,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Parallel files per worker.")
    ] = 8,
) -> None:
    """Run the distributed mode on this machine without Docker: PostgreSQL, NATS JetStream and
    SeaweedFS S3 on 127.0.0.1, the API and workers, until Ctrl-C (needs the devstack extra)."""
    from imageimport.devstack import DevStackOptions, run_dev_stack
    from imageimport.errors import ConfigError

    options = DevStackOptions(data_dir, api_port, workers, concurrency)
    try:
        code = run_dev_stack(options)
    except ConfigError as error:
        raise _fail(error) from None
    except ImageImportError as error:
        raise _fail(error, 1) from None
    raise typer.Exit(code)


# After SIGTERM, how long `serve` and `api` wait for open HTTP connections before closing them.
HTTP_SHUTDOWN_SECONDS = 5


def _run_api(settings: Settings, host: str, port: int, local_workers: bool) -> None:
    import uvicorn

    from imageimport.api import create_app

    # Opened once up front so a wrong setting is one clear sentence here, not a traceback
    # from the server's startup.
    try:
        _services(settings).close()
    except ImageImportError as error:
        raise _fail(error) from None
    _warn_about_access(settings, host, port)
    # After SIGTERM, open connections get a few seconds, then are closed: an event stream (the
    # page follows an import live) would otherwise hold the shutdown up for as long as the
    # import runs. The workers' own grace (SHUTDOWN_GRACE_SECONDS) comes after.
    uvicorn.run(
        create_app(settings, local_workers=local_workers),
        host=host,
        port=port,
        timeout_graceful_shutdown=HTTP_SHUTDOWN_SECONDS,
    )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _warn_about_access(settings: Settings, host: str, port: int) -> None:
    from imageimport.settings import secret

    if secret(settings.api_token):
        return
    log = logging.getLogger(__name__)
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    if not settings.anonymous_writes:
        log.warning(
            "API_TOKEN is not set: the API refuses every change (starting, cancelling or "
            "retrying imports, deleting images) and only answers reads. Set API_TOKEN to a "
            "long random value (e.g. `openssl rand -hex 24`) and send it as 'Authorization: "
            "Bearer <token>', or set ALLOW_ANONYMOUS=true to let anyone who can reach %s make "
            "changes.",
            where,
        )
    elif not _is_loopback(host):
        log.warning(
            "ALLOW_ANONYMOUS=true and no API_TOKEN: anyone who can reach %s can start imports "
            "and delete images.",
            where,
        )
