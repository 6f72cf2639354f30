"""The `emorec` command line: predict, batch, train, evaluate, pairs, calibrate, serve."""

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from . import fusion, scoring, speaker_groups
from .errors import InputError
from .speech_features import CHANNELS, FRONT_ENDS, HEADS, MISSING_CLASSES, NORMALISATIONS

FEATURE_CACHE = ".cache/embeddings"  # speech features per clip and front end (train, evaluate, calibrate)


def _predictor(args):
    from .predictor import Predictor
    return Predictor(args.models) if args.models else Predictor()


def _describe(result):
    """Human-readable lines for a predict result."""
    lines, timeline_lines = [], []
    face, speech, fused = result["face"], result["speech"], result["fusion"]
    if "timeline" in result:
        from .timeline import describe
        lines, timeline_lines = describe(result)
    elif face is not None:
        if face["status"] == "no_face":
            lines.append("face:   no face found")
        for number, found in enumerate(face["faces"], 1):
            lines.append(f"face {number}: {found['label']} ({found['confidence']:.0%}) at box {found['box']}")
    if speech is not None:
        note = " (no speech detected)" if speech["status"] == "no_speech" else ""
        lines.append(f"speech: {speech['label']} ({speech['confidence']:.0%}) over "
                     f"{speech['duration']:.1f} s{note}")
    if fused["label"] is None:
        lines.append("fusion: nothing to go on")
    else:
        weights, applied = (", ".join(f"{name}={weight:.2f}" for name, weight in fused[key].items())
                            for key in ("weights", "effective_weights"))
        lines.append(f"fusion: {fused['label']} ({fused['confidence']:.0%}) from "
                     f"{' + '.join(fused['sources'])} [weights {weights}; applied {applied}]")
        lines += [f"  {label:<9}{'█' * round(p * 30):<31}{p:.1%}" for label, p in fused["probabilities"].items()]
    return "\n".join(lines + timeline_lines)


def predict(args):
    if args.video is not None:
        if args.image is not None or args.audio is not None:
            raise InputError("give --video alone: its own frames and sound are the face and the speech")
        from . import annotate
        from .video import DEFAULT_FPS
        if args.annotate:
            annotate.output_format(args.annotate)  # a bad name is refused before the analysis
        result = _predictor(args).predict_video(args.video, DEFAULT_FPS if args.fps is None else args.fps,
                                                args.weights)
        if args.annotate:
            annotate.write(args.video, result, args.annotate)
    elif args.annotate:
        raise InputError("--annotate draws a --video's timeline: give --video")
    elif args.image is None and args.audio is None:
        raise InputError("give --image, --audio, both, or --video")
    else:
        result = _predictor(args).predict(args.image, args.audio, args.weights, args.crops)
    print(json.dumps(result, indent=2) if args.json else _describe(result))


def batch(args):
    if args.normalise and args.engine == "ray":
        raise InputError("--normalise runs on the local engine only: each group's clips are standardised "
                         "together in one process")
    if args.normalise and (args.pairs or args.modality != "speech"):
        raise InputError("--normalise groups speech clips: give files or folders with --modality speech "
                         "(faces, videos and --pairs are scored one by one)")
    if args.speech_model and not args.normalise:
        raise InputError("--speech-model is the head that --normalise scores with: give --normalise too")
    if args.engine == "ray":
        from . import distributed
        return distributed.batch(args)
    if args.manifest or args.address or args.workers:
        raise InputError("--manifest, --address and --workers need --engine ray")
    if not args.pairs and not args.paths:
        raise InputError("give files or folders to predict, or --pairs")
    if args.normalise:
        return _batch_by_group(args)
    from tqdm import tqdm

    predictor = _predictor(args)
    if args.pairs:
        jobs = [({"image": row["image"], "audio": row["audio"]},
                 lambda r=row: scoring.predict_pair(predictor, r["image"], r["audio"], args.crops, args.weights))
                for row in scoring.read_pairs(args.pairs)]
    else:
        inputs = list(scoring.expand(args.paths, args.modality))
        jobs = [({"path": path}, lambda p=path, kind=kind: scoring.predict_file(predictor, p, kind, args.crops))
                for path, kind in inputs]
    extra = list(jobs[0][0]) if jobs else ["path"]
    if not args.pairs and any(kind == "video" for _, kind in inputs):
        extra += list(scoring.VIDEO_FIELDS)
    writer = scoring.Writer(args.out, predictor.labels, extra)
    failures = 0
    for key, job in tqdm(jobs, desc="predicting", unit="file", file=sys.stderr):
        result = scoring.row(job)
        failures += result["status"] == "error"
        writer.write({**key, **result})
    print(f"{len(jobs)} inputs, {failures} failed -> {args.out}", file=sys.stderr)


def _batch_by_group(args):
    """`batch --normalise`: speech clips standardised by their group's statistics (`emorec.speaker_groups`)."""
    groups = speaker_groups.grouped([path for path, _ in scoring.expand(args.paths, "speech")], args.normalise)
    predictor = _predictor(args)
    head = speaker_groups.load_head(args.speech_model or predictor.models_dir / speaker_groups.HEAD,
                                    predictor.labels)
    writer = scoring.Writer(args.out, predictor.labels, ["path", "group", "group_size"])
    count = failures = 0
    for row in speaker_groups.score(predictor, head, groups):
        count, failures = count + 1, failures + (row["status"] == "error")
        writer.write(row)
    print(f"{count} inputs in {len(groups)} group{'s' * (len(groups) != 1)}, {failures} failed -> {args.out}",
          file=sys.stderr)


def train(args):
    if args.pack:
        from . import datasets
        if args.modality != "face":
            raise InputError("--pack packs FER2013 faces: use it with `train face`")
        size = datasets.pack_fer2013(args.data[0], args.out)
        return print(f"FER2013 Training and PublicTest packed -> {args.out} ({size / 2**20:.1f} MiB)")
    from . import speech_features, train as training
    recipes = training.AUGMENTATIONS if args.modality == "face" else speech_features.AUGMENTATIONS
    if args.augment is not None and args.augment not in recipes:
        raise InputError(f"--augment {args.augment}: the {args.modality} recipes are {', '.join(recipes)}")
    if args.modality == "face":
        if len(args.data) > 1:
            raise InputError("the face CNN trains on one FER2013 --data")
        training.train_face(args.data[0], args.out, args.epochs or 30, args.batch_size or 64,
                            args.learning_rate or 2e-3, args.width, args.labels, args.seed, args.resume,
                            args.limit, args.augment or "standard", args.workers, args.time_limit)
    else:
        if args.level_db is not None and args.front_end != "whisper-base":
            raise InputError("--level-db levels what Whisper hears: use it with --front-end whisper-base")
        extractor = (speech_features.YAMNetFeatures(args.yamnet) if args.yamnet and args.front_end == "yamnet"
                     else speech_features.front_end(args.front_end, args.models or speech_features.MODELS_DIR,
                                                    {"level_db": args.level_db}))
        training.train_speech(args.data, args.out, extractor, args.cache, args.epochs or 150,
                              args.batch_size or 64, args.learning_rate or 1e-3, args.variants, args.labels,
                              args.seed, args.resume, args.normalise, args.augment or "signal", args.head,
                              args.missing_classes, args.int8)
    print(f"model written to {args.out}")


def evaluate(args):
    from . import evaluate as evaluation
    if args.calibrate and (args.modality, args.split) != ("face", "photos-wild"):
        raise InputError("--calibrate needs evaluate face --split photos-wild")
    if args.modality == "speech" and not args.cross_validate:
        return _evaluate_speech(args, evaluation)
    predictor = _predictor(args)
    folder = Path(args.out) if args.out else Path(predictor.models_dir) / args.modality
    if args.modality == "speech" and args.cross_validate:
        return _cross_validate(args, predictor, folder)
    if args.modality == "fusion":
        report, name = _evaluate_fusion(args, predictor, evaluation)
    else:
        report = evaluation.evaluate_face(predictor, args.data or _missing("--data"),
                                          args.split or "private-test")
        if args.calibrate:
            _write_photo_temperature(predictor, report)
        name = f"metrics-{report['split']}"
    path = evaluation.write_report(report, folder, name, f"{args.modality}, {report['split']}")
    balanced = f"balanced accuracy {report['balanced_accuracy']:.2%}, " if "balanced_accuracy" in report else ""
    print(f"{args.modality} on {report['split']}: {balanced}accuracy {report['accuracy']:.2%}, "
          f"macro-F1 {report['macro_f1']:.3f} over {report['samples']} samples -> {path}")


def _evaluate_speech(args, evaluation):
    """A speech head on a corpus split: metrics-<corpus>-<split>.json and .png beside the head."""
    from .models import MODELS_DIR
    models_dir = Path(args.models) if args.models else MODELS_DIR
    folder = Path(args.model) if args.model else models_dir / "speech"
    report = evaluation.evaluate_speech(folder, args.data or _missing("--data"), args.split or "test",
                                        args.cache, models_dir, args.channel)
    name = "-".join(["+".join(report["corpora"]), report["split"], *([args.channel] if args.channel else [])])
    path = evaluation.write_report(report, Path(args.out) if args.out else folder, f"metrics-{name}",
                                   f"speech, {name}")
    shared = report["shared_classes"]
    print(f"speech on {name}: accuracy {report['accuracy']:.2%}, balanced accuracy "
          f"{report['balanced_accuracy']:.2%}, macro-F1 {report['macro_f1']:.3f} over {report['samples']} clips; "
          f"on the {len(shared['labels'])} shared classes (predictions restricted to them) balanced accuracy "
          f"{shared['balanced_accuracy']:.2%} over {shared['samples']} clips"
          + (f" ({len(report['undecodable_left_out'])} undecodable clips left out)"
             if report["undecodable_left_out"] else "") + f" -> {path}")


def _write_photo_temperature(predictor, report):
    """`evaluate face --split photos-wild --calibrate`: the refitted temperature into the photo ensemble's card."""
    if "calibration" not in report:
        raise InputError(f"{report['data']}: no face found in any photo, nothing to calibrate on")
    path = predictor.models_dir / "face" / "model.json"
    card = json.loads(path.read_text())
    card["photo"] = {**card.get("photo", {}), "temperature": report["calibration"]["temperature"],
                     "calibration": report["calibration"]}
    path.write_text(json.dumps(card, indent=1) + "\n")
    print(f"photo temperature {report['calibration']['temperature']:.3f} -> {path}")


def _evaluate_fusion(args, predictor, evaluation):
    """The fusion report over a pseudo-pair manifest (and its name), each condition printed."""
    if not args.pairs:
        raise InputError("evaluate fusion needs --pairs (a manifest from `emorec pairs`)")
    if args.adaptive is not None:
        predictor.fusion_adaptive = args.adaptive
    conditions, exponents = (evaluation.CONDITIONS, evaluation.EXPONENTS) if args.robustness else (["clean"], ())
    weights = args.weights and fusion.parse_weights(args.weights)
    report = {"split": f"pseudo-paired {Path(args.pairs).stem}", "manifest": str(args.pairs),
              "rule": predictor.fusion_rule, "adaptive": predictor.fusion_adaptive,
              **evaluation.evaluate_fusion(predictor, scoring.read_pairs(args.pairs), args.crops, weights,
                                           conditions, exponents)}
    for condition, accuracy in report["conditions"].items():
        print(f"{condition:<48} " + "  ".join(f"{modality} {value:.2%}" for modality, value in accuracy.items()
                                                if value is not None))
    for exponent, compared in report.get("certainty_exponents", {}).items():
        print(f"fused with certainty exponent {exponent}: mean over the conditions with both modalities "
              f"{compared['mean_with_both']:.2%}")
    return report, f"metrics-{Path(args.pairs).stem}"


def _missing(option):
    raise InputError(f"give {option}")


def _cross_validate(args, predictor, folder):
    from . import train as training
    report = training.speech_cross_validation(args.data or _missing("--data"),
                                              predictor.models_dir / "yamnet" / "yamnet.tflite", args.cache)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cross-validation.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    for name, recipe in report["recipes"].items():
        print(f"{name:<56} {report['folds']}-fold {recipe['cross_validation_mean']:.1%} "
              f"+- {recipe['cross_validation_std']:.1%}  canonical test {recipe['canonical_test']:.1%}")
    print(f"-> {path}")


def pairs(args):
    from . import datasets
    rows = datasets.pseudo_pairs(args.faces, args.speech, args.split, per_clip=args.per_clip, seed=args.seed)
    try:
        with open(args.out, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "audio", "label"])
            writer.writerows(rows)
    except OSError as error:
        raise InputError(f"{args.out}: cannot write the manifest ({error.strerror})") from None
    print(f"{len(rows)} pseudo-pairs ({args.split}) -> {args.out}")


def calibrate(args):
    from . import calibration
    predictor = _predictor(args)
    result = calibration.tune(predictor, args.faces, args.speech, args.cache, args.per_clip, args.seed)
    for name, folder in (("face", "face"), ("speech", "speech"), ("speaker", speaker_groups.HEAD)):
        if name not in result:
            continue
        path = predictor.models_dir / folder / "model.json"
        card = json.loads(path.read_text())
        card["temperature"], card["calibration"] = result[name]["temperature"], result[name]
        path.write_text(json.dumps(card, indent=1) + "\n")
        print(f"{Path(folder).as_posix()}: temperature {result[name]['temperature']:.3f}, expected calibration "
              f"error {result[name]['ece_before']:.3f} -> {result[name]['ece_after']:.3f}")
    settings = result["fusion"]
    path = predictor.models_dir / "fusion" / "fusion.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(settings, indent=1) + "\n")
    validation = settings["validation"]
    print(f"validation pseudo-pairs: {validation['pairs']}; face only {validation['face_only']:.2%}, "
          f"speech only {validation['speech_only']:.2%}")
    for rule, scores in validation["rules"].items():
        print(f"  {rule:<8} cross-validated {scores['cross_validated_accuracy']:.2%}")
    print(f"kept: {settings['rule']}, weights {settings['weights']} -> {path}")


def serve(args):
    from .web import create_app
    create_app(args.models).run(host=args.host, port=args.port, debug=False, threaded=True)


def parser():
    main = argparse.ArgumentParser(prog="emorec", description="Emotion recognition from faces and speech.")
    main.add_argument("--models", help="folder of model files (default: the bundled models, or $EMOREC_MODELS)")
    commands = main.add_subparsers(dest="command", required=True)

    command = commands.add_parser("predict", help="predict the emotion of one photo, one clip, or both")
    command.add_argument("--image", help="a photo (JPEG, PNG, BMP, WebP)")
    command.add_argument("--audio", help="a recording (WAV, FLAC, MP3, M4A, Opus...), any rate and channels")
    command.add_argument("--video", help="a video (MP4, MOV, MKV, AVI, WebM): face, speech and fused timelines")
    command.add_argument("--fps", type=float, help="--video: frames analysed a second (default 5)")
    command.add_argument("--annotate", metavar="OUT", help="--video: write it with boxes, labels and a running "
                         "emotion bar drawn in (.mp4, .mov or .mkv)")
    command.add_argument("--weights", help="fusion weights, e.g. face=0.6,speech=0.4")
    command.add_argument("--crops", action="store_true", help="the image is one already-cropped face")
    command.add_argument("--json", action="store_true", help="print the full JSON result")
    command.set_defaults(run=predict)

    command = commands.add_parser("batch", help="predict many files or folders to JSONL or CSV")
    command.add_argument("paths", nargs="*", help="files and folders (searched recursively)")
    command.add_argument("--modality", choices=("face", "speech", "video", "auto"), default="auto")
    command.add_argument("--crops", action="store_true", help="images are already-cropped faces")
    command.add_argument("--pairs", help="csv with columns image,audio: one fused row per pair")
    command.add_argument("--weights", help="fusion weights for --pairs, e.g. face=0.6,speech=0.4")
    command.add_argument("--out", required=True,
                         help="output file, .jsonl or .csv; with --engine ray also a .parquet dataset (resumable)")
    command.add_argument("--engine", choices=("local", "ray"), default="local",
                         help="local: this process; ray: Ray Data actors on a cluster (needs emorec[ray])")
    command.add_argument("--address", help="ray: the cluster, auto or ray://host:10001 (default: $RAY_ADDRESS, "
                         "one started on this machine, or a new local one)")
    command.add_argument("--workers", type=int, help="ray: scoring actors (default: one per CPU of the cluster)")
    command.add_argument("--manifest", help="ray: csv or parquet with a path column, or image,audio columns")
    command.add_argument("--normalise", choices=speaker_groups.GROUPINGS,
                         help="speech: standardise each clip's features by its group's clips (folder: each "
                         f"directory is one speaker; batch: all clips are one), at least {speaker_groups.MIN_CLIPS} a group, "
                         "and score them with a head trained so (local engine)")
    command.add_argument("--speech-model", help="--normalise: the head's folder (default: speech/speaker in "
                         "the models folder)")
    command.set_defaults(run=batch)

    command = commands.add_parser("train", help="train the face CNN or the speech head")
    command.add_argument("modality", choices=("face", "speech"))
    command.add_argument("--data", required=True, nargs="+", action="extend",
                         help="FER2013 folder, csv or .npz pack / speech corpus folders (RAVDESS, nEMO: "
                         "train speakers)")
    command.add_argument("--out", required=True, help="run folder: checkpoints and the exported model "
                         "(with --pack: the .npz to write)")
    command.add_argument("--epochs", type=int)
    command.add_argument("--batch-size", type=int)
    command.add_argument("--learning-rate", type=float)
    command.add_argument("--width", type=int, default=32, help="face CNN base width")
    command.add_argument("--labels", choices=("seven", "six"), default="seven", help="label preset")
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--resume", action="store_true", help="continue the run in --out")
    command.add_argument("--augment", help="augmentation recipe: face standard (default) or photo (adds "
                         "real-photo degradations); speech signal (default) or channel (adds reverberation, "
                         "codecs and the telephone band)")
    command.add_argument("--workers", type=int, default=1, help="processes augmenting face batches")
    command.add_argument("--limit", type=int, help="face: train on a random subset of this many faces (checks)")
    command.add_argument("--time-limit", type=float, help="seconds: stop after the last epoch that fits")
    command.add_argument("--pack", action="store_true",
                         help="face: write FER2013 Training and PublicTest from --data into one .npz at --out")
    command.add_argument("--front-end", default="yamnet", choices=sorted(FRONT_ENDS),
                         help="speech feature front end")
    command.add_argument("--yamnet", help="YAMNet .tflite (speech; default: the bundled one)")
    command.add_argument("--level-db", type=float, help="speech, whisper-base: bring each clip to this active "
                         "speech level (dB below full scale, e.g. -26) before the encoder; default: as recorded")
    command.add_argument("--int8", action="store_true", help="speech: export the head with int8 weights "
                         "(dynamic range; the face CNN always is); with --resume, re-export a finished run")
    command.add_argument("--cache", default=FEATURE_CACHE, help="speech feature cache (per front end)")
    command.add_argument("--variants", type=int, default=4, help="augmented copies per clip (speech)")
    command.add_argument("--head", default="linear", choices=HEADS,
                         help="speech head: linear on all features, a learned weighting of Whisper's layers first, a "
                         "hidden layer first (mlp), or linear on the means of Whisper's middle layers (middle-means)")
    command.add_argument("--normalise", default="none", choices=NORMALISATIONS,
                         help="speech: standardise features per speaker or per corpus (a head for batches of "
                         "clips, not for single clips)")
    command.add_argument("--missing-classes", default="masked", choices=MISSING_CLASSES,
                         help="speech: the classes a corpus lacks (nEMO: disgust) left out of its clips' loss "
                         "(masked) or taught as wrong answers for them (negative)")
    command.set_defaults(run=train)

    command = commands.add_parser("evaluate", help="metrics JSON and confusion matrix of a model")
    command.add_argument("modality", choices=("face", "speech", "fusion"))
    command.add_argument("--data", help="FER2013 folder or csv, a folder of labelled photos (face, --split "
                         "photos-wild) / speech corpus folder (RAVDESS, nEMO)")
    command.add_argument("--split", choices=("train", "public-test", "private-test", "photos-wild", "validation",
                                             "test", "all"),
                         help="default: private-test (face), test (speech: RAVDESS actors 21-24, nEMO KD0, WR0); "
                         "photos-wild (face): --data is a folder of labelled photos, detector on")
    command.add_argument("--model", help="speech: a trained head's folder (default: the bundled speech model)")
    command.add_argument("--channel", choices=CHANNELS, help="speech: every clip through this codec, the "
                         "telephone band, or a gain (a quieter or louder recording) first")
    command.add_argument("--calibrate", action="store_true",
                         help="face, photos-wild: refit the photo ensemble's temperature there, write it into the card")
    command.add_argument("--cross-validate", action="store_true",
                         help="speech: compare the recipes by 6-fold actor cross-validation (trains; minutes)")
    command.add_argument("--cache", default=FEATURE_CACHE, help="speech feature cache (per front end)")
    command.add_argument("--pairs", help="fusion: a pseudo-pair manifest from `emorec pairs`")
    command.add_argument("--crops", action="store_true", help="fusion: the manifest's images are face crops")
    command.add_argument("--weights", help="fusion weights, e.g. face=0.6,speech=0.4 (default: the tuned ones)")
    command.add_argument("--robustness", action="store_true", help="fusion: also noisy, blurred, removed inputs, and certainty exponents "
                         "0, 0.5, 1 compared on them")
    command.add_argument("--adaptive", type=float,
                         help="fusion: certainty weighting exponent, 0 for fixed weights (default: the tuned one)")
    command.add_argument("--out", help="report folder (default: the model's folder)")
    command.set_defaults(run=evaluate)

    command = commands.add_parser("pairs", help="a pseudo-pair manifest: RAVDESS clips with FER2013 faces")
    command.add_argument("--faces", required=True, help="FER2013 folder (Kaggle layout)")
    command.add_argument("--speech", required=True, help="RAVDESS folder")
    command.add_argument("--split", choices=("validation", "test"), default="test",
                         help="test: actors 21-24 x PrivateTest; validation: actors 17-20 x PublicTest")
    command.add_argument("--per-clip", type=int, default=1, help="faces paired with each clip")
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--out", required=True, help="manifest csv (columns image,audio,label)")
    command.set_defaults(run=pairs)

    command = commands.add_parser("calibrate", help="fit temperatures and the fusion rule on validation data")
    command.add_argument("--faces", required=True, help="FER2013 folder or csv (PublicTest is used)")
    command.add_argument("--speech", required=True, help="RAVDESS folder (actors 17-20 are used)")
    command.add_argument("--per-clip", type=int, default=10, help="faces paired with each validation clip")
    command.add_argument("--cache", default=FEATURE_CACHE, help="speech feature cache of the speaker head's "
                         "calibration (per front end)")
    command.add_argument("--seed", type=int, default=0)
    command.set_defaults(run=calibrate)

    command = commands.add_parser("serve", help="run the web app locally")
    command.add_argument("--host", default="127.0.0.1")
    command.add_argument("--port", type=int, default=int(os.environ.get("PORT", 5000)))
    command.set_defaults(run=serve)
    return main


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except InputError as error:
        print(f"emorec: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
