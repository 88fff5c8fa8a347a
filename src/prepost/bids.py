"""BIDS input layer: find each participant's and session's files and check what later stages need.

Every check collects its problems instead of stopping at the first, so a user sees the whole list at
once. Each problem names the file, the field and what was expected. The workflow calls
:func:`collect_study` while it builds the DAG, before any job runs.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from prepost.errors import BIDSError, InputError, ValidationReport
from prepost.paths import derivative

__all__ = [
    "BLOOD_COLUMNS", "BOLD_REQUIRED", "LABEL_RE", "PET_REQUIRED", "PET_UNITS", "SessionFiles",
    "check_blood", "check_blood_coverage", "check_bold", "check_label", "check_pet",
    "collect_study", "find_one", "find_session_files", "inventory", "matches", "output_paths",
    "parse_name", "read_json", "read_participants", "sidecar", "sidecar_paths", "write_derivative_description",
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


# ----------------------------------------------------------------------------------------------
# participants.tsv
def read_participants(path):
    """Read and check participants.tsv; returns the table with labels in column ``label``.

    IDs must be ``sub-<alphanumeric>`` and unique. Path characters (``/``, ``..``, spaces) are
    rejected here, before any path is built from an ID.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "a participants.tsv file (tab separated, column participant_id)",
                         "no such file")
    try:
        df = pd.read_csv(path, sep="\t", dtype={"participant_id": str}, na_values=["n/a"],
                         keep_default_na=False)
    except Exception as exc:  # pandas raises many types on malformed text
        raise InputError(path, None, "a tab-separated table", f"unreadable ({exc})") from None
    if "participant_id" not in df.columns:
        raise InputError(path, "participant_id", "a participant_id column",
                         f"columns {list(df.columns)}")
    problems = []
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
    a list accepts any of its labels. Entities not named in ``filters`` are not constrained.
    """
    for key, want in (filters or {}).items():
        have = entities.get(key)
        if want is None:
            if have is not None:
                return False
        elif isinstance(want, (list, tuple)):
            if have not in {str(w) for w in want}:
                return False
        elif have != str(want):
            return False
    return True


def find_one(folder, pattern, source_desc):
    """The single file in ``folder`` matching ``pattern``; None if none; error if several."""
    if not folder.is_dir():
        return None
    hits = sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))
    if len(hits) > 1:
        raise BIDSError(folder, source_desc, "exactly one matching file (set the entity filters in "
                        "config 'bids')", ", ".join(h.name for h in hits))
    return hits[0] if hits else None


def sidecar_paths(bids_dir, data_path):
    """JSON sidecars that apply to ``data_path`` (BIDS inheritance principle), nearest first."""
    data_path = Path(data_path)
    bids_dir = Path(bids_dir)
    ents, suffix = parse_name(data_path.name)
    found = []
    folder = data_path.parent
    while True:
        for js in sorted(folder.glob(f"*_{suffix}.json")):
            jents, jsuf = parse_name(js.name)
            if jsuf == suffix and all(ents.get(k) == v for k, v in jents.items()):
                found.append(js)
        if folder == bids_dir or folder.parent == folder or bids_dir not in folder.parents:
            break
        folder = folder.parent
    found.sort(key=lambda p: (-len(p.parts), -len(parse_name(p.name)[0])))
    return found


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


def find_session_files(bids_dir, participant, session, task="rest", tracer=None):
    """Locate one participant's and session's inputs (missing files are None)."""
    root = Path(bids_dir) / f"sub-{participant}" / f"ses-{session}"
    stem = f"sub-{participant}_ses-{session}"
    sf = SessionFiles(participant, session)
    sf.t1w = find_one(root / "anat", f"{stem}_*T1w.nii*", "T1w")
    sf.bold = find_one(root / "func", f"{stem}_*task-{task}_*bold.nii*", "bold")
    trc = f"*trc-{tracer}_*" if tracer else "*"
    sf.pet = find_one(root / "pet", f"{stem}_{trc}pet.nii*", "pet")
    if sf.bold is not None:
        sf.bold_json = _nearest_json(bids_dir, sf.bold)
    if sf.pet is not None:
        sf.pet_json = _nearest_json(bids_dir, sf.pet)
        for tsv in sorted((root / "pet").glob(f"{stem}_{trc}recording-*_blood.tsv")):
            rec = parse_name(tsv.name)[0]["recording"]
            sf.blood[rec] = (tsv, tsv.with_suffix(".json"))
    return sf


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
                problems.append(f"{where}: fields 'FrameTimesStart'/'FrameDuration': expected "
                                f"non-overlapping frames, found frame {k + 2} starting at {s[k + 1]} "
                                f"s before frame {k + 1} ends at {s[k] + d[k]} s")
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
    return meta


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
                  check_images=True):
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
        BIDS ``task-`` and ``trc-`` labels to select (tracer None: any single PET).
    fmri, pet : bool
        Which modalities the configured stages need.
    check_images : bool
        Also read NIfTI headers (frame count, TR, dimensionality).

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
                sf = find_session_files(bids_dir, sub, ses, task=task, tracer=tracer)
            except BIDSError as exc:
                problems.append(str(exc))
                continue
            if sf.t1w is None:
                problems.append(f"{sesdir / 'anat'}: expected a T1w image "
                                f"(sub-{sub}_ses-{ses}_T1w.nii.gz), found none")
            if fmri:
                if sf.bold is None:
                    problems.append(f"{sesdir / 'func'}: expected a resting BOLD run "
                                    f"(sub-{sub}_ses-{ses}_task-{task}_bold.nii.gz), found none")
                elif check_images:
                    check_bold(bids_dir, sf.bold, problems)
                elif sf.bold_json is None:
                    problems.append(f"{sf.bold}: expected a JSON sidecar with RepetitionTime, "
                                    "found none")
            if pet:
                if sf.pet is None:
                    problems.append(f"{sesdir / 'pet'}: expected a PET image "
                                    f"(sub-{sub}_ses-{ses}_trc-<tracer>_pet.nii.gz), found none")
                elif check_images:
                    meta = check_pet(bids_dir, sf.pet, problems)
                    last = {tsv: check_blood(tsv, js, problems) for tsv, js in sf.blood.values()}
                    check_blood_coverage(last, _scan_end(meta), sf.pet_json, problems)
            out[(sub, ses)] = sf
    if problems:
        raise ValidationReport(problems)
    return out


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
