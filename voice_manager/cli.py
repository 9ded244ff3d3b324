"""``chorus voices sync|pull|list|clone|delete|catalog refresh``: the voice manager's
subcommands.

Importing this module is cheap (argparse and option declarations only); the sync
machinery, urllib and huggingface_hub are imported inside the handler that runs.
``sync --once`` is the init container (exit 0 once every required voice is present),
``sync`` without it is the sidecar, ``pull`` and ``list`` are for people on one machine,
``catalog refresh`` updates the catalog of hub voices they read (:mod:`.catalog`).
``clone`` and ``delete`` make and remove cloned XTTS voices with the same checks and
files as the server's clone API (:mod:`chorus.common.clips`, :mod:`chorus.common.clones`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from chorus.common.options import (
    CommandError,
    Option,
    add_config,
    add_options,
    command,
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
    resolve_command,
    setup_logging,
)

__all__ = ["register"]


COMMON_OPTIONS = [
    Option("--timeout", "seconds to wait to connect or for any read before a download fails",
           default=30.0, type=positive_float, metavar="S"),
    Option("--retries", "extra attempts for transient faults (5xx, timeouts, dropped "
           "connections)", default=3, type=non_negative_int, metavar="N"),
    Option("--backoff", "seconds before the first retry; doubles each time",
           default=2.0, type=positive_float, metavar="S"),
    Option("--hf-endpoint", "Hugging Face endpoint (default: HF_ENDPOINT or huggingface.co)",
           metavar="URL"),
    Option("--log-level", "logging level", default="INFO",
           choices=["DEBUG", "INFO", "WARNING", "ERROR"]),
]

CATALOG_OPTION = Option(
    "--catalog", "voice catalog file (default: the one `voices catalog refresh` wrote under "
    "$XDG_CACHE_HOME/chorus, else the snapshot bundled with chorus, whichever is newer)",
    type=Path, metavar="FILE")

REPO_OPTIONS = [
    Option("--repo", "Hugging Face repo", default="rhasspy/piper-voices", metavar="OWNER/NAME"),
    Option("--revision", "branch, tag or commit of the repo", default="main", metavar="REV"),
]

SYNC_OPTIONS = [
    Option("--manifest", "voice manifest (JSON) to converge to", type=Path, metavar="FILE"),
    Option("--dest", "voices directory to manage", type=Path, metavar="DIR"),
    Option("--once", "converge once and exit (init container); non-zero when a required "
           "voice failed", kind="flag", default=False),
    Option("--only-required", "with --once: install only the manifest's required voices "
           "and delete nothing (init container: start as soon as the default voice is "
           "there)", kind="flag", default=False),
    Option("--parallel", "voices downloaded at the same time", default=2,
           type=positive_int, metavar="N"),
    Option("--poll-interval", "seconds between manifest checks in watch mode",
           default=5.0, type=positive_float, metavar="S"),
    Option("--retry-interval", "seconds before failed voices are tried again in watch mode",
           default=60.0, type=positive_float, metavar="S"),
    Option("--remove-after", "delete voices this manager installed once they have been out "
           "of the manifest this many seconds (default: never)", type=non_negative_float,
           metavar="S"),
    Option("--keep", "never delete this voice (e.g. the server's default voice); repeatable",
           kind="list", metavar="NAME"),
    Option("--status-port", "watch mode: serve /healthz, /readyz, /status and /metrics on "
           "this port (0 picks a free one; default: off)", type=port, metavar="PORT"),
    Option("--status-host", "address for --status-port", default="0.0.0.0",  # noqa: S104
           metavar="HOST"),
    Option("--progress-interval", "seconds between the log lines of a download in progress",
           default=5.0, type=positive_float, metavar="S"),
    CATALOG_OPTION,
]

PULL_OPTIONS = [
    Option("--dest", "voices directory", default=Path("."), type=Path, metavar="DIR"),
    *REPO_OPTIONS,
    CATALOG_OPTION,
]

LIST_OPTIONS = [
    Option("--dest", "voices directory (marks what is installed)", default=Path("."),
           type=Path, metavar="DIR"),
    Option("--language", "only voices of this locale (en_US), family (en) or language "
           "(English); any case", metavar="LANG"),
    Option("--installed", "only voices installed in --dest, those the catalog does not "
           "know included", kind="flag", default=False),
    Option("--json", "print JSON instead of a table", kind="flag", default=False),
    Option("--engine", "which engine's voices: piper (the hub catalog), kokoro "
           "(Kokoro-82M v1.0's voices) or xtts (the cloned voices in --dest)",
           default="piper", choices=["piper", "kokoro", "xtts"]),
    CATALOG_OPTION,
]

REFRESH_OPTIONS = [
    Option("--catalog", "file to write (default: $XDG_CACHE_HOME/chorus/catalog.json, "
           "else ~/.cache/chorus/catalog.json)", type=Path, metavar="FILE"),
    *REPO_OPTIONS,
]

CLONE_OPTIONS = [
    Option("--dest", "voices directory to write the cloned voice into", default=Path("."),
           type=Path, metavar="DIR"),
    Option("--clip", "a reference clip of the speaker (wav, flac, mp3 or ogg, 3 to 30 s); "
           "repeatable, 1 to 5", kind="list", type=Path, metavar="FILE"),
    Option("--language", "the language the voice speaks when a request names none (an "
           "XTTS code: en, de, fr, es, ...)", metavar="CODE"),
    Option("--languages", "further languages it is offered in, separated by commas",
           kind="list", metavar="CODES"),
    Option("--description", "free text shown in voice listings", metavar="TEXT"),
]

DELETE_OPTIONS = [
    Option("--dest", "voices directory holding the cloned voice", default=Path("."),
           type=Path, metavar="DIR"),
]

_ALL = (COMMON_OPTIONS + SYNC_OPTIONS + PULL_OPTIONS + LIST_OPTIONS + REFRESH_OPTIONS
        + CLONE_OPTIONS + DELETE_OPTIONS)


def register(subparsers: Any) -> None:
    """Add ``voices`` (``sync``, ``pull``, ``list``, ``clone``, ``delete``, ``catalog
    refresh``) to ``chorus``."""
    voices = subparsers.add_parser("voices", help="install and list voices (voice manager)")
    commands = voices.add_subparsers(dest="voices_command", required=True, metavar="COMMAND")

    sync = commands.add_parser("sync", help="converge a voices directory to a manifest")
    add_config(sync)
    add_options(sync, SYNC_OPTIONS + COMMON_OPTIONS)
    command(sync, _run_sync)

    pull = commands.add_parser("pull", help="download Piper voices from Hugging Face")
    pull.add_argument("names", nargs="+", metavar="NAME", help="Piper voice key, e.g. "
                      "en_US-amy-medium")
    add_config(pull)
    add_options(pull, PULL_OPTIONS + COMMON_OPTIONS)
    command(pull, _run_pull)

    listing = commands.add_parser("list", help="list known hub voices (the catalog) and "
                                  "what a directory holds")
    add_config(listing)
    add_options(listing, LIST_OPTIONS)
    command(listing, _run_list)

    clone = commands.add_parser("clone", help="make a cloned XTTS voice from reference "
                                "clips of a speaker")
    clone.add_argument("name", metavar="NAME", help="the new voice's name")
    add_config(clone)
    add_options(clone, CLONE_OPTIONS)
    command(clone, _run_clone)

    delete = commands.add_parser("delete", help="delete a cloned XTTS voice (only those: "
                                 "other voices belong to their manifest)")
    delete.add_argument("name", metavar="NAME", help="the cloned voice")
    add_config(delete)
    add_options(delete, DELETE_OPTIONS)
    command(delete, _run_delete)

    catalog = commands.add_parser("catalog", help="the catalog of known hub voices")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True,
                                              metavar="COMMAND")
    refresh = catalog_commands.add_parser(
        "refresh", help="download the hub's voices.json and make it the catalog")
    add_config(refresh)
    add_options(refresh, REFRESH_OPTIONS + COMMON_OPTIONS)
    command(refresh, _run_refresh)


def _resolve(args: argparse.Namespace, options: list[Option]) -> dict[str, Any]:
    return resolve_command(args, options, _ALL)


def _load_catalog(values: dict[str, Any]) -> Any:
    """The catalog the command reads."""
    from .catalog import CatalogError, load_catalog

    try:
        return load_catalog(values["catalog"])
    except CatalogError as err:
        raise CommandError(str(err)) from err


def _sync_settings(values: dict[str, Any], catalog: Any, progress: Any = None) -> Any:
    from .sources import FetchSettings
    from .sync import SyncSettings

    return SyncSettings(
        parallel=values.get("parallel") or 1, retries=values["retries"],
        backoff_s=values["backoff"], remove_after_s=values.get("remove_after"),
        keep=frozenset(values.get("keep") or ()),
        fetch=FetchSettings(timeout_s=values["timeout"], hf_endpoint=values["hf_endpoint"],
                            progress=progress, catalog=catalog))


def _run_sync(args: argparse.Namespace) -> int:
    values = _resolve(args, SYNC_OPTIONS + COMMON_OPTIONS)
    if values["only_required"] and not values["once"]:
        raise CommandError("--only-required needs --once")
    if values["manifest"] is None or values["dest"] is None:
        raise CommandError("--manifest and --dest are required")
    setup_logging(values["log_level"])
    import logging
    import os
    import signal
    import threading

    from chorus.common.manifest import ManifestError

    from .progress import logged_progress
    from .sync import VolumeSyncer
    from .watch import ManifestWatcher, read_manifest

    catalog = _load_catalog(values)
    try:
        syncer = VolumeSyncer(values["dest"], _sync_settings(
            values, catalog, logged_progress(values["progress_interval"])))
    except OSError as err:
        raise CommandError(f"{values['dest']}: {err}") from err
    if values["once"]:
        try:
            _, manifest = read_manifest(values["manifest"])
        except ManifestError as err:
            syncer.set_manifest_error(str(err))
            raise CommandError(str(err)) from err
        syncer.set_manifest_error(None)
        report = syncer.converge(manifest, required_only=values["only_required"])
        for name in report.failed:
            status = report.voices[name]
            kind = "required" if status.required else "optional"
            print(f"chorus voices sync: {kind} voice {name} failed: {status.error}",
                  file=sys.stderr)
        return 1 if report.required_failed else 0

    stop = threading.Event()
    watcher = ManifestWatcher(values["manifest"], syncer, values["poll_interval"],
                              values["retry_interval"])

    def _stop(signum: int, _frame: Any) -> None:
        stop.set()
        if watcher.busy:
            # Downloads block in worker threads for up to --timeout. Leaving now is as
            # safe as SIGKILL (tested): every file appears atomically and the next start
            # removes the temp files; waiting could outlast the pod's grace period.
            logging.getLogger(__name__).warning("stopping mid-sync; unfinished downloads "
                                                "are discarded")
            logging.shutdown()
            os._exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    status_server = None
    if values["status_port"] is not None:
        from .status_http import StatusServer

        try:
            status_server = StatusServer(watcher, values["status_host"], values["status_port"])
        except OSError as err:
            raise CommandError(f"status port: {err}") from err
        status_server.start()
        logging.getLogger(__name__).info("status on http://%s:%d/", values["status_host"],
                                         status_server.port)
    try:
        watcher.run(stop)
    finally:
        if status_server is not None:
            status_server.stop()
    return 0


def _tqdm_progress(label: str, total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, leave=True)


def _run_pull(args: argparse.Namespace) -> int:
    values = _resolve(args, PULL_OPTIONS + COMMON_OPTIONS)
    setup_logging(values["log_level"] if values["log_level"] != "INFO" else "WARNING")
    from chorus.common.manifest import ManifestError, parse_manifest

    from .sync import VolumeSyncer

    catalog = _load_catalog(values)
    if not _known_to_catalog(catalog, values["repo"], args.names):
        return 2
    source = {"huggingFace": {"repo": values["repo"], "revision": values["revision"]}}
    try:
        manifest = parse_manifest({"version": 1, "voices": [
            {"name": name, "source": source} for name in args.names]})
    except ManifestError as err:
        raise CommandError(str(err)) from err
    try:
        syncer = VolumeSyncer(values["dest"], _sync_settings(values, catalog, _tqdm_progress))
    except OSError as err:
        raise CommandError(f"{values['dest']}: {err}") from err
    report = syncer.converge(manifest)
    for name, status in report.voices.items():
        if status.state == "installed":
            print(f"{name}: installed in {values['dest']}", file=sys.stderr)
        else:
            print(f"chorus voices pull: {name} failed: {status.error}", file=sys.stderr)
    return 1 if report.failed else 0


def _known_to_catalog(catalog: Any, repo: str, names: list[str]) -> bool:
    """For the repo the catalog indexes, refuse unknown keys before any download.

    Other repos (custom voices) are not in the catalog; the hub itself answers for them.
    """
    if not catalog.describes(repo):
        return True
    unknown = [name for name in names if name not in catalog]
    for name in unknown:
        close = catalog.suggest(name)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        print(f"chorus voices pull: error: {name} is not a voice of {repo}{hint}",
              file=sys.stderr)
    if unknown:
        print(f"chorus voices pull: (catalog: {catalog.describe()}; `chorus voices catalog "
              "refresh` if the voice is new on the hub, --repo for another repo)",
              file=sys.stderr)
    return not unknown


def _list_kokoro(values: dict[str, Any]) -> int:
    from .listing import format_kokoro_table, kokoro_rows

    rows = kokoro_rows(values["dest"], language=values["language"],
                       installed_only=bool(values["installed"]))
    if values["json"]:
        import json

        print(json.dumps([row.to_dict() for row in rows], indent=2, ensure_ascii=False))
        return 0
    if not rows:
        language = f" for language {values['language']!r}" if values["language"] else ""
        print(f"no Kokoro voices{language}", file=sys.stderr)
        return 0
    for line in format_kokoro_table(rows):
        print(line)
    return 0


def _list_xtts(values: dict[str, Any]) -> int:
    from chorus.common.xtts import HF_REPO, LICENSE_NAME, LICENSE_URL

    from .listing import format_xtts_table, xtts_rows

    rows = xtts_rows(values["dest"], language=values["language"])
    if values["json"]:
        import json

        print(json.dumps([row.to_dict() for row in rows], indent=2, ensure_ascii=False))
        return 0
    if rows:
        for line in format_xtts_table(rows):
            print(line)
    else:
        language = f" for language {values['language']!r}" if values["language"] else ""
        print(f"no XTTS voices{language} in {values['dest']}", file=sys.stderr)
    print(f"XTTS voices have no catalog: each is cloned from your own clips (the server's "
          f"clone API, or a manifest entry or TTSVoice with engine xtts). The checkpoint "
          f"({HF_REPO}) is licensed under the {LICENSE_NAME} ({LICENSE_URL}): the voice "
          f"manager fetches it only with acceptLicense: {LICENSE_NAME}.", file=sys.stderr)
    return 0


def _run_list(args: argparse.Namespace) -> int:
    values = _resolve(args, LIST_OPTIONS)
    if values["engine"] == "kokoro":
        return _list_kokoro(values)
    if values["engine"] == "xtts":
        return _list_xtts(values)
    from .catalog import known_languages
    from .listing import format_table, voice_rows

    catalog = _load_catalog(values)
    installed_only = bool(values["installed"])
    rows = voice_rows(catalog, values["dest"], language=values["language"],
                      installed_only=installed_only)
    if values["json"]:
        import json

        print(json.dumps([row.to_dict() for row in rows], indent=2, ensure_ascii=False))
        return 0
    if not rows:
        language = f" for language {values['language']!r}" if values["language"] else ""
        if installed_only:
            print(f"no voices{language} in {values['dest']}", file=sys.stderr)
        else:
            print(f"no catalog voices{language}; the catalog has "
                  f"{', '.join(known_languages(catalog))}", file=sys.stderr)
        return 0
    for line in format_table(rows, installed_only):
        print(line)
    print(f"catalog: {catalog.describe()}", file=sys.stderr)
    return 0


def _run_refresh(args: argparse.Namespace) -> int:
    values = _resolve(args, REFRESH_OPTIONS + COMMON_OPTIONS)
    setup_logging(values["log_level"] if values["log_level"] != "INFO" else "WARNING")
    from .catalog import CatalogError, default_cache_path
    from .refresh import refresh_catalog
    from .sources import FetchSettings

    settings = FetchSettings(timeout_s=values["timeout"], hf_endpoint=values["hf_endpoint"])
    try:
        target = values["catalog"] or default_cache_path()
    except CatalogError as err:
        raise CommandError(str(err)) from err
    try:
        catalog = refresh_catalog(target, values["repo"], values["revision"], settings,
                                  retries=values["retries"], backoff_s=values["backoff"])
    except CatalogError as err:
        raise CommandError(f"{err}; {target} is unchanged", code=1) from err
    print(f"catalog: {catalog.describe()}", file=sys.stderr)
    return 0


def _run_clone(args: argparse.Namespace) -> int:
    """Check the clips as the clone API does, then write the voice into ``--dest``.

    Exit 2 for bad input (a clip, the name, a language), 1 when the name is taken or the
    directory cannot be written. The checkpoint may come later (the voice manager
    fetches it once its licence is accepted): its absence is a warning here, where the
    API, which answers with the voice ready to speak, refuses."""
    values = _resolve(args, CLONE_OPTIONS)
    from chorus.common.clips import ClipError, check_clip, read_clip_file
    from chorus.common.clones import (
        CloneError,
        check_request,
        missing_checkpoint_files,
        write_clone,
    )
    from chorus.common.xtts import MAX_CLIPS

    try:
        request = check_request(args.name, values["language"], values["languages"] or (),
                                values["description"])
    except CloneError as err:
        raise CommandError(_as_flag(err.message, err.param)) from err
    paths: list[Path] = values["clip"] or []
    if not 1 <= len(paths) <= MAX_CLIPS:
        raise CommandError(f"give 1 to {MAX_CLIPS} --clip files, not {len(paths)}")
    clips = []
    for path in paths:
        try:
            clips.append(check_clip(read_clip_file(path), str(path)))
        except ClipError as err:
            raise CommandError(err.message) from err
        except OSError as err:
            raise CommandError(f"{path}: {err.strerror or err}") from err
        except RuntimeError as err:  # PyAV missing
            raise CommandError(str(err), code=1) from err
    dest: Path = values["dest"]
    try:
        entry = write_clone(dest, request, [clip.wav for clip in clips])
    except CloneError as err:
        raise CommandError(err.message.removeprefix("name: "), code=1) from err
    except OSError as err:
        raise CommandError(f"{dest}: {err.strerror or err}", code=1) from err
    seconds = sum(clip.seconds for clip in clips)
    print(f"{request.name}: cloned into {dest} ({len(clips)} clip(s), {seconds:.1f} s; "
          f"languages {', '.join(entry.all_languages)})", file=sys.stderr)
    missing = missing_checkpoint_files(dest, entry.checkpoint)
    if missing:
        print(f"chorus voices clone: warning: the XTTS checkpoint is not in "
              f"{dest / entry.checkpoint} yet (no {', '.join(p.name for p in missing)}); "
              "the voice is spoken once it is", file=sys.stderr)
    return 0


def _as_flag(message: str, param: str | None) -> str:
    """``language: field required`` as the command line spells it: ``--language: ...``."""
    if param is None or not message.startswith(f"{param}: "):
        return message
    return f"{'NAME' if param == 'name' else '--' + param}: {message[len(param) + 2:]}"


def _run_delete(args: argparse.Namespace) -> int:
    values = _resolve(args, DELETE_OPTIONS)
    from chorus.common.clones import CloneError, delete_clone

    dest: Path = values["dest"]
    try:
        entry = delete_clone([dest], args.name)
    except CloneError as err:
        raise CommandError(err.message, code=1) from err
    except OSError as err:
        raise CommandError(f"{dest}: {err.strerror or err}", code=1) from err
    print(f"{args.name}: deleted from {dest} ({len(entry.clips)} clip(s))", file=sys.stderr)
    return 0
