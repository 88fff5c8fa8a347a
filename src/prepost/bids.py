"""BIDS input layer: find each participant's and session's files and check what later stages need.

Every check collects its problems instead of stopping at the first, so a user sees the whole list at
once. Each problem names the file, the field and what was expected. The workflow calls
:func:`collect_study` while it builds the DAG, before any job runs.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from prepost.errors import BIDSError, InputError, ValidationReport
from prepost.paths import derivative

__all__ = [
    "BLOOD_COLUMNS", "BOLD_REQUIRED", "FILTER_ENTITIES", "LABEL_RE", "PET_REQUIRED", "PET_UNITS",
    "BoldRun", "SessionFiles", "check_blood", "check_blood_coverage", "check_bold", "check_label",
    "check_pet", "check_protocol", "collect_study", "find_session_files",
    "injected_bq", "inventory", "matches", "output_paths", "parse_name", "read_json",
    "read_participants", "sidecar", "sidecar_paths", "study_tracer", "write_derivative_description",
    "write_inventory",
]

LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")

# Sidecar fields each later stage reads.
BOLD_REQUIRED = ("RepetitionTime",)
PET_REQUIRED = ("FrameTimesStart", "FrameDuration", "Units", "TracerName", "InjectedRadioactivity",
                "ImageDecayCorrected")
# Radioactivity-concentration units accepted in a PET sidecar (case-insensitive).
PET_UNITS = {"bq/ml", "kbq/ml", "mbq/ml", "nci/ml", "uci/ml", "µci/ml", "mci/ml", "bq/cc",
             "kbq/cc", "mbq/cc"}
BLOOD_COLUMNS = {"PlasmaAvail": "plasma_radioactivity",
                 "WholeBloodAvail": "whole_blood_radioactivity",
                 "MetaboliteAvail": "metabolite_parent_fraction"}


@dataclass
class SessionFiles:
    """The input files of one participant and session (paths, or None when absent)."""

    participant: str
    session: str
    t1w: Path | None = None
    bold: Path | None = None
    bold_json: Path | None = None
    pet: Path | None = None
    pet_json: Path | None = None
    blood: dict = field(default_factory=dict)  # recording label -> (tsv, json)
    # every resting BOLD run (BoldRun), sorted by run; ``bold``/``bold_json`` are the first one's
    bold_runs: list = field(default_factory=list)
    tracer: str | None = None  # the PET's trc- label (None: the file has no trc- entity)
    # frame times of the PET (seconds, from its sidecar): stages decide what a static scan supports
    pet_frame_start_s: list | None = None
    pet_frame_duration_s: list | None = None

    def as_dict(self, root=None):
        """Row of the inventory; paths relative to ``root`` when given."""
        d = {"participant_id": f"sub-{self.participant}", "session": self.session,
             "t1w": self.t1w, "bold": self.bold, "bold_json": self.bold_json,
             "pet": self.pet, "pet_json": self.pet_json}
        for rec, (tsv, js) in sorted(self.blood.items()):
            d[f"blood_{rec}"] = tsv
            d[f"blood_{rec}_json"] = js
        def _fmt(v):
            if not isinstance(v, Path):
                return v
            return str(v.relative_to(root)) if root is not None and v.is_relative_to(root) else str(v)

        return {k: _fmt(v) for k, v in d.items()}


@dataclass
class BoldRun:
    """One resting BOLD run of a session.

    ``entities`` are the run's entities beyond ``sub``/``ses`` and ``echo`` (e.g.
    ``{"task": "rest", "run": "1"}``), for derivative names; ``bold`` and ``bold_json`` its image and nearest sidecar (for a
    multi-echo run read through fMRIPrep, the first echo).
    """

    entities: dict
    bold: Path
    bold_json: Path | None = None


# ----------------------------------------------------------------------------------------------
# participants.tsv
def read_participants(path):
    """Read and check participants.tsv; returns the table with labels in column ``label``.

    Any column names are accepted (BIDS only recommends snake_case) and ``n/a`` marks a missing
    value. IDs must be ``sub-<alphanumeric>`` and unique. Path characters (``/``, ``..``,
    spaces) are rejected here, before any path is built from an ID. Column names must be unique
    and map to distinct formula terms (:func:`prepost.stats.covariates.covariate_terms`);
    typed covariates, matched by their term (``age`` also as ``Age``, ``followup_days``), must
    be numbers >= 0 or ``n/a``. Every problem names the file, the line and the column.

    Returns
    -------
    pandas.DataFrame
        The columns as written in the file (headers stripped of surrounding blanks), typed
        covariates as numbers, plus ``label``.

    Raises
    ------
    InputError, ValidationReport
    """
    from prepost.stats.covariates import TYPED_COVARIATES, covariate_terms

    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "a participants.tsv file (tab separated, column participant_id)",
                         "no such file")
    df = _read_participants_tsv(path)
    if "participant_id" not in df.columns:
        raise InputError(path, "participant_id", "a participant_id column",
                         f"columns {list(df.columns)}")
    terms = covariate_terms(df.columns, source=str(path))
    problems = []
    for col, term in terms.items():
        if term in TYPED_COVARIATES:
            df[col] = _typed_covariate(df[col], path, col, *TYPED_COVARIATES[term], problems)
    for i, pid in enumerate(df.participant_id, start=2):
        pid_s = "" if pd.isna(pid) else str(pid)
        label = pid_s[4:] if pid_s.startswith("sub-") else None
        if label is None or not LABEL_RE.match(label):
            problems.append(f"{path}: line {i}, field 'participant_id': expected 'sub-' followed by "
                            f"letters and digits only, found {pid_s!r}")
    dup = df.participant_id[df.participant_id.duplicated()].unique()
    for pid in dup:
        problems.append(f"{path}: field 'participant_id': expected unique IDs, found {pid!r} twice")
    if df.empty:
        problems.append(f"{path}: expected at least one participant, found none")
    if problems:
        raise ValidationReport(problems)
    df = df.copy()
    df["label"] = df.participant_id.str[4:]
    return df


def _read_participants_tsv(path):
    """participants.tsv as a DataFrame: ``n/a`` missing, headers stripped and unique."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = [h.strip() for h in f.readline().rstrip("\r\n").split("\t")]
        df = pd.read_csv(path, sep="\t", dtype={"participant_id": str}, na_values=["n/a"],
                         keep_default_na=False, encoding="utf-8-sig")
    except Exception as exc:  # pandas raises many types on malformed text
        raise InputError(path, None, "a tab-separated table", f"unreadable ({exc})") from None
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise InputError(path, ", ".join(dup), "each column name once (line 1)", "repeated")
    df.columns = header
    return df


def _typed_covariate(values, path, column, expected, minimum, problems):
    """``values`` as numbers (a numeric column keeps its dtype); a cell that is not ``n/a`` nor
    a number >= ``minimum`` is a problem naming the file, its line (the header is line 1) and
    the column."""
    out = values if pd.api.types.is_numeric_dtype(values) else pd.to_numeric(values, errors="coerce")
    bad = (values.notna() & out.isna()) | (out < minimum)
    for i in np.flatnonzero(bad.to_numpy()):
        problems.append(f"{path}: line {i + 2}, column {column!r}: expected {expected} or n/a, "
                        f"found {values.iloc[i]!r}")
    return out


def check_label(value, what, source="config"):
    """A BIDS label (session, task, tracer): letters and digits only."""
    if not isinstance(value, str) or not LABEL_RE.match(value):
        raise InputError(source, what, "a BIDS label of letters and digits only", repr(value))
    return value


# ----------------------------------------------------------------------------------------------
# discovery
def parse_name(name):
    """BIDS entities and suffix of a file name: ``({"sub": "01", "task": "rest"}, "bold")``."""
    stem = Path(name).name.split(".")[0]
    parts = stem.split("_")
    ents = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    return ents, parts[-1]


def matches(entities, filters):
    """Whether a file's ``entities`` pass ``filters`` (entity: label, list of labels, or None).

    A label filter requires the entity with that label; None requires the entity to be absent;
    a list accepts any of its labels. Numeric labels compare as numbers (``run: 1`` selects
    ``run-01``). Entities not named in ``filters`` are not constrained.
    """
    def same(have, want):
        want = str(want)
        return have == want or (have.isdigit() and want.isdigit() and int(have) == int(want))

    for key, want in (filters or {}).items():
        have = entities.get(key)
        if want is None:
            if have is not None:
                return False
        elif have is None:
            return False
        elif not any(same(have, w) for w in (want if isinstance(want, (list, tuple)) else [want])):
            return False
    return True


# Entities the config filters may constrain, per input (fMRIPrep's --bids-filter-file style).
FILTER_ENTITIES = {"t1w": ("acq", "ce", "rec", "run"),
                   "bold": ("acq", "ce", "rec", "dir", "run", "echo"),
                   "pet": ("task", "acq", "ce", "rec", "run")}


def _images(folder, suffix, filters, **required):
    """NIfTI files in ``folder`` with ``suffix`` whose entities pass ``filters`` and ``required``."""
    if not folder.is_dir():
        return []
    hits = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.name.endswith((".nii", ".nii.gz")):
            continue
        ents, suf = parse_name(p.name)
        if suf == suffix and matches(ents, {**(filters or {}), **required}):
            hits.append(p)
    return hits


def _run_key(path):
    """Sort key of a run: numeric run label first (run-2 before run-10), then the name."""
    run = parse_name(path.name)[0].get("run", "")
    return (int(run) if run.isdigit() else float("inf"), run, path.name)


def _several(folder, what, hits, keys):
    return BIDSError(folder, what, "one file (select it with config " +
                     " or ".join(f"'{k}'" for k in keys) + ")",
                     ", ".join(h.name for h in hits))


def find_session_files(bids_dir, participant, session, task="rest", tracer=None, filters=None,
                       bold_raw=True):
    """Locate one participant's and session's inputs (missing files are None).

    Parameters
    ----------
    bids_dir : path-like
        Dataset root.
    participant, session : str
        Labels without ``sub-``/``ses-``.
    task, tracer : str or None
        ``task-`` label of the resting BOLD runs; ``trc-`` label of the PET (None: the single PET
        of the session, whatever its tracer).
    filters : dict, optional
        ``{"t1w": {...}, "bold": {...}, "pet": {...}}``, each entity -> label, list of labels or
        None (entity absent); see :func:`matches`.
    bold_raw : bool
        Whether the raw BOLD is read (False in fMRIPrep mode: several echoes of a run are then
        one run, and several files per run are not an error).

    Raises
    ------
    BIDSError
        When several files match where one is needed: the error lists them and the config key.
    """
    filters = filters or {}
    root = Path(bids_dir) / f"sub-{participant}" / f"ses-{session}"
    ident = {"sub": participant, "ses": session}
    sf = SessionFiles(participant, session)
    t1w = _images(root / "anat", "T1w", filters.get("t1w"), **ident)
    if len(t1w) > 1:
        raise _several(root / "anat", "T1w", t1w, ["bids.filters.t1w"])
    sf.t1w = t1w[0] if t1w else None
    runs = {}
    for p in _images(root / "func", "bold", filters.get("bold"), **ident, task=task):
        # echoes of a run are one run: fMRIPrep combines them; raw data need an echo filter
        ents = {k: v for k, v in parse_name(p.name)[0].items() if k not in ("sub", "ses", "echo")}
        runs.setdefault(tuple(sorted(ents.items())), []).append(p)
    for key, paths in runs.items():
        if len(paths) > 1 and bold_raw:
            raise _several(root / "func", f"bold run {dict(key)}", paths, ["bids.filters.bold"])
    for key, paths in sorted(runs.items(), key=lambda kv: _run_key(kv[1][0])):
        sf.bold_runs.append(BoldRun(dict(key), paths[0], _nearest_json(bids_dir, paths[0])))
    if sf.bold_runs:
        sf.bold, sf.bold_json = sf.bold_runs[0].bold, sf.bold_runs[0].bold_json
    pet_req = {**ident, "trc": tracer} if tracer else ident
    pets = _images(root / "pet", "pet", filters.get("pet"), **pet_req)
    if len(pets) > 1:
        raise _several(root / "pet", "pet", pets, ["bids.tracer", "bids.filters.pet"])
    if pets:
        sf.pet = pets[0]
        sf.pet_json = _nearest_json(bids_dir, sf.pet)
        pet_ents = parse_name(sf.pet.name)[0]
        sf.tracer = pet_ents.get("trc")
        # blood recordings whose entities (beyond recording-) all agree with the PET's
        for tsv in sorted((root / "pet").glob("*_blood.tsv")):
            ents, _ = parse_name(tsv.name)
            rec = ents.pop("recording", None)
            if rec is not None and all(pet_ents.get(k) == v for k, v in ents.items()):
                sf.blood[rec] = (tsv, tsv.with_suffix(".json"))
    return sf


def sidecar_paths(bids_dir, data_path):
    """JSON sidecars that apply to ``data_path`` (BIDS inheritance principle), nearest first."""
    data_path = Path(data_path)
    bids_dir = Path(bids_dir)
    ents, suffix = parse_name(data_path.name)
    found = []
    folder = data_path.parent
    while True:
        for name in _json_names(folder):
            if not name.endswith(f"_{suffix}.json"):
                continue
            jents, jsuf = parse_name(name)
            if jsuf == suffix and all(ents.get(k) == v for k, v in jents.items()):
                found.append(folder / name)
        if folder == bids_dir or folder.parent == folder or bids_dir not in folder.parents:
            break
        folder = folder.parent
    found.sort(key=lambda p: (-len(p.parts), -len(parse_name(p.name)[0])))
    return found


# folder -> (its mtime_ns, sorted names of its JSON files)
_JSON_NAMES = {}


def _json_names(folder):
    """Sorted names of the JSON files in ``folder``, listed once while the folder is unchanged.

    The walk up to the dataset root lists the root for every data file; with a thousand
    participants that listing (a thousand ``sub-`` folders) dominated the DAG-time input check.
    A folder's mtime changes when an entry is added, removed or renamed, so a changed folder is
    listed anew.
    """
    try:
        mtime = folder.stat().st_mtime_ns
    except OSError:
        return []
    hit = _JSON_NAMES.get(folder)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.name.endswith(".json")
                       and not e.name.startswith("."))
    _JSON_NAMES[folder] = (mtime, names)
    return names


def sidecar(bids_dir, data_path):
    """Merged JSON sidecar of ``data_path``: (dict, the JSON paths used, nearest first).

    Files are merged from the dataset root down, so nearer files override.
    """
    found = sidecar_paths(bids_dir, data_path)
    merged = {}
    for js in reversed(found):
        merged.update(read_json(js))
    return merged, found


def read_json(path):
    """Read a JSON sidecar; malformed JSON is an InputError naming the file."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, None, "a JSON sidecar", "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, None, "valid JSON", f"a parse error ({exc})") from None
    if not isinstance(obj, dict):
        raise InputError(path, None, "a JSON object", type(obj).__name__)
    return obj


def _nearest_json(bids_dir, data_path):
    used = sidecar_paths(bids_dir, data_path)
    return used[0] if used else None


# ----------------------------------------------------------------------------------------------
# checks
def _nifti_shape(path, problems):
    """Header shape and zooms of a NIfTI, or None with a problem recorded."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(str(path))
        return img.shape, img.header.get_zooms(), img.header.get_xyzt_units()
    except (gzip.BadGzipFile, EOFError, OSError, ValueError, ImageFileError) as exc:
        problems.append(f"{path}: expected a readable NIfTI image, found a corrupt or unreadable "
                        f"file ({exc})")
        return None


def _checked_sidecar(bids_dir, data_path, problems):
    """Merged sidecar of a data file and the JSON that problems name; (None, None) if unreadable."""
    try:
        meta, used = sidecar(bids_dir, data_path)
    except InputError as exc:
        problems.append(str(exc))
        return None, None
    return meta, used[0] if used else Path(str(data_path).split(".nii")[0] + ".json")


def check_bold(bids_dir, bold, problems):
    """RepetitionTime in the sidecar, a 4D image, and the header TR agreeing with it."""
    meta, where = _checked_sidecar(bids_dir, bold, problems)
    if meta is None:
        return {}
    t_r = meta.get("RepetitionTime")
    if t_r is None:
        problems.append(f"{where}: field 'RepetitionTime': expected a positive number (seconds), "
                        "found it missing")
    elif not isinstance(t_r, (int, float)) or isinstance(t_r, bool) or t_r <= 0:
        problems.append(f"{where}: field 'RepetitionTime': expected a positive number (seconds), "
                        f"found {t_r!r}")
        t_r = None
    hdr = _nifti_shape(bold, problems)
    if hdr is None:
        return meta
    shape, zooms, (_, tunit) = hdr
    if len(shape) != 4 or shape[3] < 2:
        problems.append(f"{bold}: field 'dim': expected a 4D image (x, y, z, time), found shape "
                        f"{tuple(shape)}")
        return meta
    if t_r is not None and len(zooms) > 3 and zooms[3] > 0:
        header_t_r = float(zooms[3]) / (1000.0 if tunit == "msec" else 1.0)
        if abs(header_t_r - t_r) > 1e-3 * max(t_r, 1):
            problems.append(f"{bold}: field 'pixdim[4]' (TR): expected {t_r} s as in {where} "
                            f"'RepetitionTime', found {header_t_r} s")
    st = meta.get("SliceTiming")
    if st is not None:
        if not isinstance(st, list) or len(st) != shape[2]:
            problems.append(f"{where}: field 'SliceTiming': expected one time per slice "
                            f"({shape[2]} values), found {st!r:.60}")
        elif t_r is not None and (min(st) < 0 or max(st) >= t_r):
            problems.append(f"{where}: field 'SliceTiming': expected times within [0, "
                            f"RepetitionTime={t_r}), found range [{min(st)}, {max(st)}]")
    return meta


def check_pet(bids_dir, pet, problems):
    """Required PET fields, frame timing consistent with the 4D frame count, concentration units."""
    meta, where = _checked_sidecar(bids_dir, pet, problems)
    if meta is None:
        return {}
    for key in PET_REQUIRED:
        if key not in meta:
            problems.append(f"{where}: field '{key}': expected it (BIDS-PET requires it), found it "
                            "missing")
    hdr = _nifti_shape(pet, problems)
    n_frames = None
    if hdr is not None:
        shape = hdr[0]
        n_frames = shape[3] if len(shape) == 4 else 1
        if len(shape) not in (3, 4):
            problems.append(f"{pet}: field 'dim': expected a 3D or 4D image, found {tuple(shape)}")
    starts, durs = meta.get("FrameTimesStart"), meta.get("FrameDuration")
    for key, val in (("FrameTimesStart", starts), ("FrameDuration", durs)):
        if val is None:
            continue
        if not isinstance(val, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in val):
            problems.append(f"{where}: field '{key}': expected a list of numbers (seconds), found "
                            f"{val!r:.60}")
            continue
        if n_frames is not None and len(val) != n_frames:
            problems.append(f"{where}: field '{key}': expected {n_frames} values (the frame count "
                            f"of {Path(pet).name}), found {len(val)}")
    if isinstance(starts, list) and isinstance(durs, list) and len(starts) == len(durs) and starts:
        try:
            s, d = np.asarray(starts, float), np.asarray(durs, float)
        except (TypeError, ValueError):
            s = d = None
        if s is not None:
            if np.any(d <= 0):
                problems.append(f"{where}: field 'FrameDuration': expected positive durations, "
                                f"found {d[d <= 0].tolist()}")
            if np.any(np.diff(s) <= 0):
                problems.append(f"{where}: field 'FrameTimesStart': expected increasing times, "
                                f"found a decrease at frame {int(np.argmax(np.diff(s) <= 0)) + 1}")
            elif np.any(s[1:] < s[:-1] + d[:-1] - 1e-6):
                k = int(np.argmax(s[1:] < s[:-1] + d[:-1] - 1e-6))
                msg = (f"{where}: fields 'FrameTimesStart'/'FrameDuration': expected "
                       f"non-overlapping frames, found frame {k + 2} starting at {s[k + 1]:g} "
                       f"s before frame {k + 1} ends at {s[k] + d[k]:g} s")
                if _durations_look_like_ends(s, d):
                    fixed = ", ".join(f"{v:g}" for v in (d - s)[:4])
                    msg += (": the FrameDuration values look like frame end times (each reaches the "
                            "next frame's start); BIDS-PET wants durations: write FrameDuration = "
                            f"end - start ([{fixed}, ...])")
                problems.append(msg)
            else:
                _check_time_units(s, d, where, problems)
    units = meta.get("Units")
    if units is not None and (not isinstance(units, str) or units.strip().lower() not in PET_UNITS):
        problems.append(f"{where}: field 'Units': expected a radioactivity concentration such as "
                        f"'kBq/mL' or 'Bq/mL', found {units!r}")
    if "ImageDecayCorrected" in meta and not isinstance(meta["ImageDecayCorrected"], bool):
        problems.append(f"{where}: field 'ImageDecayCorrected': expected true or false, found "
                        f"{meta['ImageDecayCorrected']!r}")
    ia = meta.get("InjectedRadioactivity")
    if ia is not None and (not isinstance(ia, (int, float)) or isinstance(ia, bool) or ia <= 0):
        problems.append(f"{where}: field 'InjectedRadioactivity': expected a positive number, found "
                        f"{ia!r}")
    elif ia is not None and "InjectedRadioactivityUnits" in meta:
        try:
            injected_bq(meta, where)
        except InputError as exc:
            problems.append(str(exc))
    return meta


# Frame-time plausibility (BIDS-PET times are seconds). A brain PET lasts minutes to hours: a scan
# "ending" more than a day after injection, or a frame longer than 10,000 s (2.8 h), means
# milliseconds; ten or more frames all ending within 200 s means minutes.
MAX_SCAN_END_S = 86400.0
MAX_FRAME_DURATION_S = 10000.0
MIN_MULTIFRAME_END_S = 200.0
MIN_MULTIFRAME_COUNT = 10


def _check_time_units(s, d, where, problems):
    end = float(s[-1] + d[-1])
    if end > MAX_SCAN_END_S or float(d.max()) > MAX_FRAME_DURATION_S:
        problems.append(f"{where}: fields 'FrameTimesStart'/'FrameDuration': expected seconds, "
                        f"found a scan ending at {end:g} with frames up to {float(d.max()):g} long: "
                        "the times look like milliseconds; divide them by 1000")
    elif len(s) >= MIN_MULTIFRAME_COUNT and end < MIN_MULTIFRAME_END_S:
        problems.append(f"{where}: fields 'FrameTimesStart'/'FrameDuration': expected seconds, "
                        f"found {len(s)} frames ending at {end:g}: the times look like minutes; "
                        "multiply them by 60")


def _durations_look_like_ends(s, d):
    """FrameDuration holding end times: increasing, each reaching the next frame's start."""
    return len(d) > 1 and bool(np.all(np.diff(d) > 0) and np.all(d[:-1] >= s[1:] - 1e-6))


# Radioactivity units of InjectedRadioactivityUnits, in Bq.
_ACTIVITY_BQ = {"bq": 1.0, "kbq": 1e3, "mbq": 1e6, "gbq": 1e9, "ci": 3.7e10, "mci": 3.7e7,
                "uci": 3.7e4, "µci": 3.7e4, "μci": 3.7e4, "nci": 37.0}


def injected_bq(meta, where=None):
    """Injected radioactivity of a PET sidecar in Bq, or None when the sidecar does not give it.

    Parameters
    ----------
    meta : dict
        PET sidecar (``InjectedRadioactivity`` and ``InjectedRadioactivityUnits``: Bq, kBq, MBq,
        GBq, Ci, mCi, uCi/µCi, nCi, case-insensitive).
    where : path-like, optional
        The sidecar, for the error.

    Raises
    ------
    InputError
        When the value is not a positive number, or the units are missing or unknown.
    """
    ia = meta.get("InjectedRadioactivity")
    if ia is None:
        return None
    where = where or "PET sidecar"
    if not isinstance(ia, (int, float)) or isinstance(ia, bool) or ia <= 0:
        raise InputError(where, "InjectedRadioactivity", "a positive number", repr(ia))
    units = meta.get("InjectedRadioactivityUnits")
    factor = _ACTIVITY_BQ.get(str(units).strip().lower()) if units is not None else None
    if factor is None:
        raise InputError(where, "InjectedRadioactivityUnits",
                         "a radioactivity unit (Bq, kBq, MBq, GBq, mCi, uCi, nCi)",
                         "it missing" if units is None else repr(units))
    return float(ia) * factor


def _window(value, end):
    a, b = value
    return float(a), float(end if b is None else b)


def check_protocol(frame_start_s, frame_duration_s, pet, where, problems, blood=False):
    """Check the configured PET protocol against one scan's frames (at DAG time).

    Only the steps the configuration runs are checked, each naming the scan's sidecar, its end
    and the key to set; dynamic scans only (:func:`prepost.pet.frames.scan_kind`; a static scan's SUVR window is the
    whole scan and its dynamic steps are left out):

    - ``pet.suvr_window_s`` (when ``suvr`` is a model or ``parametric_maps`` is on): the window
      (end None: scan end) must lie within the scan, with a tolerance of 1 s;
    - ``pet.tstar_s`` (frame mid-times; or ``pet.tstar_frames`` when ``tstar_s`` is null) leaves
      at least 3 frames for the linear fit of Logan, MA1 or reference Logan when one is a model
      (plasma Logan maps with blood);
    - ``pet.coreg.window_s`` must lie within the scan; ``pet.motion.min_start_s`` must leave a
      frame to register the others to.

    Parameters
    ----------
    frame_start_s, frame_duration_s : list of float
        The scan's frames (s), already checked by :func:`check_pet`.
    pet : dict
        The ``pet`` section of the configuration.
    where : path-like
        The scan's sidecar, for the messages.
    problems : list of str
        Problems are appended here.
    blood : bool
        Whether the session has arterial blood (plasma models and maps run).
    """
    from prepost.pet.frames import scan_kind

    s = np.asarray(frame_start_s, float)
    d = np.asarray(frame_duration_s, float)
    if not s.size or s.size != d.size:
        return
    end = float(s[-1] + d[-1])
    tol = 1.0
    scan = f"{where} (frames from {s[0]:g} s to the scan end at {end:g} s)"
    models = set(pet.get("models") or ())

    def window_problem(key, value):
        a, b = _window(value, end)
        if a < s[0] - tol or b > end + tol or a >= end:
            problems.append(f"{scan}: config '{key}': expected a window within the scan, found "
                            f"[{a:g}, {b:g}] s; set '{key}' within [{s[0]:g}, {end:g}] (an end of "
                            "null means the scan end)")

    # a static scan's SUVR window becomes the whole scan (prepost.pet.stage.plan_study)
    if scan_kind(s, d) != "dynamic":
        return
    if ("suvr" in models or pet.get("parametric_maps")) and pet.get("suvr_window_s"):
        window_problem("pet.suvr_window_s", pet["suvr_window_s"])
    linear = models & {"logan", "ma1", "logan_ref"}
    if blood and pet.get("parametric_maps"):
        linear.add("logan")
    if linear:
        n_frames = pet.get("tstar_frames")
        mid = s + d / 2
        if pet.get("tstar_s") is not None:
            after = int(np.sum(mid >= float(pet["tstar_s"]) - 1e-6))
            if after < 3:
                problems.append(f"{scan}: config 'pet.tstar_s': expected at least 3 frames with "
                                f"mid-times after t* for {', '.join(sorted(linear))}, found {after} "
                                f"after {pet['tstar_s']:g} s; set 'pet.tstar_s' at most "
                                f"{mid[-3]:g} (or 'pet.tstar_frames')")
        elif n_frames is not None and not 3 <= n_frames <= s.size:
            problems.append(f"{scan}: config 'pet.tstar_frames': expected 3 to the scan's {s.size} "
                            f"frames, found {n_frames}")
    coreg = (pet.get("coreg") or {}).get("window_s")
    if coreg:
        window_problem("pet.coreg.window_s", coreg)
    min_start = (pet.get("motion") or {}).get("min_start_s")
    if min_start is not None and not np.any(s >= float(min_start) - 1e-6):
        problems.append(f"{scan}: config 'pet.motion.min_start_s': expected frames starting after "
                        f"it (the motion reference), found none after {min_start:g} s; set it at "
                        f"most {s[-1]:g}")


def check_blood(tsv, json_path, problems):
    """A time column plus the columns the blood JSON declares as available.

    Returns the last sample time in seconds (None when unreadable), for the coverage check.
    """
    tsv, json_path = Path(tsv), Path(json_path)
    if not json_path.exists():
        problems.append(f"{json_path}: expected the JSON sidecar of {tsv.name}, found no file")
        return
    try:
        meta = read_json(json_path)
    except InputError as exc:
        problems.append(str(exc))
        return
    try:
        df = pd.read_csv(tsv, sep="\t", na_values=["n/a"])
    except Exception as exc:  # malformed text raises several pandas/csv error types
        problems.append(f"{tsv}: expected a tab-separated table, found an unreadable file ({exc})")
        return
    if "time" not in df.columns:
        problems.append(f"{tsv}: column 'time': expected it (seconds from TimeZero), found columns "
                        f"{list(df.columns)}")
    for flag, col in BLOOD_COLUMNS.items():
        avail = meta.get(flag)
        if avail is None:
            problems.append(f"{json_path}: field '{flag}': expected true or false, found it missing")
        elif avail is True and col not in df.columns:
            problems.append(f"{tsv}: column '{col}': expected it because {json_path.name} sets "
                            f"{flag} true, found columns {list(df.columns)}")
    for col in ["time"] + list(BLOOD_COLUMNS.values()):
        if col in df.columns:
            vals = pd.to_numeric(df[col], errors="coerce")
            bad = vals.isna() & df[col].notna()
            if bad.any():
                problems.append(f"{tsv}: column '{col}': expected numbers, found "
                                f"{df[col][bad].iloc[0]!r} on row {int(np.argmax(bad)) + 1}")
            elif (vals < 0).any():
                problems.append(f"{tsv}: column '{col}': expected non-negative values, found "
                                f"{vals[vals < 0].iloc[0]} on row {int(np.argmax(vals < 0)) + 1}")
    if "time" not in df.columns:
        return None
    times = pd.to_numeric(df["time"], errors="coerce")
    if times.isna().all():
        return None
    unit = (meta.get("time") or {}).get("Units", "s") if isinstance(meta.get("time"), dict) else "s"
    factor = 60.0 if str(unit).strip().lower() in ("min", "minutes", "m") else 1.0
    return float(times.max()) * factor


def check_blood_coverage(recordings, scan_end_s, pet_json, problems, tolerance_s=300.0):
    """Blood that ends before the scan, or whose times look like minutes labelled as seconds.

    ``recordings`` maps each blood TSV to its last sample time in seconds.
    """
    last = {k: v for k, v in recordings.items() if v is not None}
    if not last or scan_end_s is None:
        return
    end = max(last.values())
    tsv = max(last, key=last.get)
    if scan_end_s > 1800 and end < 200:
        problems.append(f"{tsv}: column 'time': expected seconds from TimeZero up to the scan end "
                        f"({scan_end_s:.0f} s, {pet_json}), found a last sample at {end:g}: the "
                        "times look like minutes; convert them or set the JSON time Units to 'min'")
    elif end < scan_end_s - tolerance_s:
        problems.append(f"{tsv}: column 'time': expected blood samples up to the end of the PET scan "
                        f"({scan_end_s:.0f} s, from {pet_json}), found the last sample at "
                        f"{end:g} s")


def collect_study(bids_dir, participants, sessions, *, task="rest", tracer=None, fmri=True, pet=True,
                  check_images=True, filters=None, bold_raw=True, pet_config=None):
    """Find and check every participant's and session's inputs.

    Parameters
    ----------
    bids_dir : path-like
        Dataset root.
    participants : list of str
        Labels without ``sub-``.
    sessions : list of str
        Session labels (baseline, follow-up).
    task, tracer : str
        BIDS ``task-`` and ``trc-`` labels to select (tracer None: the single PET of each session,
        every session's with the same ``trc-`` label or none).
    fmri, pet : bool
        Which modalities the configured stages need.
    check_images : bool
        Also read NIfTI headers (frame count, TR, dimensionality).
    filters : dict, optional
        Entity filters of each input (config ``bids.filters``: ``t1w``, ``bold``, ``pet``).
    bold_raw : bool
        Whether the raw BOLD is read (False when fMRIPrep derivatives are: the raw BOLD is then
        neither required nor checked).
    pet_config : dict, optional
        The ``pet`` configuration: when given, its frame windows are checked against each scan
        (:func:`check_protocol`).

    Returns
    -------
    dict
        ``{(participant, session): SessionFiles}``.

    Raises
    ------
    ValidationReport
        Listing every problem, each naming the file, the field and what was expected.
    """
    bids_dir = Path(bids_dir)
    problems = []
    if not bids_dir.is_dir():
        raise ValidationReport([f"{bids_dir}: expected a BIDS dataset folder, found none"])
    if not (bids_dir / "dataset_description.json").exists():
        problems.append(f"{bids_dir / 'dataset_description.json'}: expected it (BIDS requires it), "
                        "found no file")
    out = {}
    for sub in participants:
        subdir = bids_dir / f"sub-{sub}"
        if not subdir.is_dir():
            problems.append(f"{subdir}: expected the data folder of participant sub-{sub} (listed "
                            "in participants.tsv), found none")
            continue
        for ses in sessions:
            sesdir = subdir / f"ses-{ses}"
            if not sesdir.is_dir():
                have = sorted(p.name for p in subdir.glob("ses-*"))
                problems.append(f"{sesdir}: expected session '{ses}' (config 'sessions'), found "
                                f"{have or 'no sessions'}")
                continue
            try:
                sf = find_session_files(bids_dir, sub, ses, task=task, tracer=tracer,
                                        filters=filters, bold_raw=bold_raw)
            except BIDSError as exc:
                problems.append(str(exc))
                continue
            if sf.t1w is None:
                problems.append(f"{sesdir / 'anat'}: expected a T1w image "
                                f"(sub-{sub}_ses-{ses}_T1w.nii.gz; config 'bids.filters.t1w'), "
                                "found none")
            if fmri and bold_raw:
                if not sf.bold_runs:
                    problems.append(f"{sesdir / 'func'}: expected a resting BOLD run "
                                    f"(sub-{sub}_ses-{ses}_task-{task}_bold.nii.gz; config "
                                    "'bids.task', 'bids.filters.bold'), found none")
                t_rs = {}
                for run in sf.bold_runs:
                    if check_images:
                        t_rs[run.bold.name] = check_bold(bids_dir, run.bold, problems).get(
                            "RepetitionTime")
                    elif run.bold_json is None:
                        problems.append(f"{run.bold}: expected a JSON sidecar with RepetitionTime, "
                                        "found none")
                # the runs of a session are combined into one series (fmri.combine_runs)
                if len({t for t in t_rs.values() if isinstance(t, (int, float))}) > 1:
                    problems.append(f"{sesdir / 'func'}: field 'RepetitionTime': expected one TR "
                                    f"for the runs of a session (they are combined), found {t_rs}; "
                                    "choose runs with config 'bids.filters.bold'")
            if pet:
                if sf.pet is None:
                    trc = f"trc-{tracer}_" if tracer else "[trc-<tracer>_]"
                    there = [p.name for p in _images(sesdir / "pet", "pet", None)]
                    found = f"only {', '.join(there)}" if there else "none"
                    problems.append(f"{sesdir / 'pet'}: expected a PET image "
                                    f"(sub-{sub}_ses-{ses}_{trc}pet.nii.gz; config 'bids.tracer', "
                                    f"'bids.filters.pet'), found {found}")
                else:
                    n = len(problems)
                    meta = check_pet(bids_dir, sf.pet, problems) if check_images else \
                        (_checked_sidecar(bids_dir, sf.pet, problems)[0] or {})
                    pet_ok = len(problems) == n  # frames usable: the scan end is known
                    if check_images:
                        last = {tsv: check_blood(tsv, js, problems) for tsv, js in sf.blood.values()}
                        if pet_ok:
                            check_blood_coverage(last, _scan_end(meta), sf.pet_json, problems)
                    starts, durs = meta.get("FrameTimesStart"), meta.get("FrameDuration")
                    if pet_ok and isinstance(starts, list) and isinstance(durs, list):
                        sf.pet_frame_start_s = [float(v) for v in starts]
                        sf.pet_frame_duration_s = [float(v) for v in durs]
                        if pet_config is not None:
                            check_protocol(starts, durs, pet_config, sf.pet_json, problems,
                                           blood=bool(sf.blood))
            out[(sub, ses)] = sf
    if pet and tracer is None:
        _check_same_tracer(out, problems)
    if problems:
        raise ValidationReport(problems)
    return out


def _check_same_tracer(study, problems):
    labels = {}
    for key, sf in sorted(study.items()):
        if sf.pet is not None:
            labels.setdefault(sf.tracer, []).append(sf.pet.name)
    if len(labels) > 1:
        found = "; ".join(f"{'trc-' + t if t else 'no trc-'}: {', '.join(names)}"
                          for t, names in sorted(labels.items(), key=lambda kv: str(kv[0])))
        problems.append(f"PET images: field 'trc': expected one tracer label in every session "
                        f"(set config 'bids.tracer' or 'bids.filters.pet'), found {found}")


def study_tracer(study):
    """The ``trc-`` label shared by the PET images of ``study`` (None when they have none)."""
    labels = {sf.tracer for sf in study.values() if sf.pet is not None}
    return labels.pop() if len(labels) == 1 else None


def _scan_end(meta):
    try:
        return float(meta["FrameTimesStart"][-1]) + float(meta["FrameDuration"][-1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def inventory(study, bids_dir=None):
    """One row per participant and session: files found (relative to ``bids_dir`` when given) and
    the key sidecar values."""
    rows = []
    for (sub, ses), sf in sorted(study.items()):
        row = sf.as_dict(Path(bids_dir) if bids_dir is not None else None)
        if sf.bold is not None:
            import nibabel as nib

            meta, _ = sidecar(_bids_root(sf.bold), sf.bold)
            row["bold_tr"] = meta.get("RepetitionTime")
            row["bold_volumes"] = nib.load(str(sf.bold)).shape[-1]
            if len(sf.bold_runs) > 1:  # several runs: one comma-separated entry per run
                runs = [SessionFiles(sub, ses, bold=r.bold, bold_json=r.bold_json).as_dict(
                    Path(bids_dir) if bids_dir is not None else None) for r in sf.bold_runs]
                row["bold"] = ",".join(str(r["bold"]) for r in runs)
                row["bold_json"] = ",".join(str(r["bold_json"]) for r in runs)
                row["bold_volumes"] = ",".join(str(nib.load(str(r.bold)).shape[-1])
                                               for r in sf.bold_runs)
        if sf.pet is not None:
            meta, _ = sidecar(_bids_root(sf.pet), sf.pet)
            row["pet_frames"] = len(meta.get("FrameTimesStart", []))
            row["pet_units"] = meta.get("Units")
            row["tracer"] = meta.get("TracerName")
            starts, durs = meta.get("FrameTimesStart"), meta.get("FrameDuration")
            row["pet_duration_s"] = float(starts[-1] + durs[-1]) if starts and durs else None
        row["blood_recordings"] = ",".join(sorted(sf.blood)) or "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def _bids_root(path):
    path = Path(path).resolve()
    for parent in path.parents:
        if parent.name.startswith("sub-"):
            return parent.parent
    return path.parent


def write_inventory(table, path):
    """Write the inventory table (TSV, 'n/a' for missing)."""
    from prepost.io import write_tsv

    write_tsv(table, path)


def write_derivative_description(path, source_dir, config=None):
    """``dataset_description.json`` of the derivatives: what made them and from which data."""
    import platform

    from prepost import __version__
    from prepost.io import write_json
    from prepost.provenance import package_versions

    write_json({
        "Name": "prepost derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "prepost", "Version": __version__,
                         "Description": "pre/post resting fMRI + dynamic PET workflow"}],
        "SourceDatasets": [{"URL": f"file://{Path(source_dir).resolve()}"}],
        "Configuration": config or {},
        "Environment": {"python": platform.python_version(), "packages": package_versions()},
    }, path)


def output_paths(results):
    """Paths of the BIDS stage's outputs under ``results``.

    Returns
    -------
    dict
        ``inventory``: the input files found for every participant and session
        (``qc/bids_inventory.tsv``); ``description``: the derivatives' ``dataset_description.json``.
    """
    return {
        "inventory": derivative(results, "bids_inventory", ".tsv", datatype="qc"),
        "description": derivative(results, "dataset_description", ".json"),
    }
