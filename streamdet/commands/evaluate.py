"""``streamdet evaluate BENCHMARK``: every benchmark over ``--seeds N``, mean ± sd printed.

Each benchmark runs once per seed (``--seed`` is the first), into ``--out`` itself for one
seed or ``--out/seed<k>`` for several, and ``--out/<benchmark>_seeds.json`` holds every
number's mean, standard deviation and values. Benchmarks that set a threshold also take
``--threshold-policy`` (whose alarms are the headline: the benchmark's protocol or a
registered threshold rule) and the rules' parameters (``--risk``, ``--threshold-params``);
every rule is reported either way, decided by the daemon's own code.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamdet.core.errors import InvalidInputError
from streamdet.evaluation.seeds import format_spread, is_spread, over_seeds

Row = list[Any]


def table(rows: list[Row], header: list[str]) -> str:
    """Aligned columns; aggregated numbers print as ``mean ± sd``."""
    cells = [header] + [[format_spread(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options that shape a run (what ``--resume`` compares), not where it goes."""
    skip = {"func", "out", "seed", "seeds", "resume"}
    return {
        k: v
        for k, v in sorted(vars(args).items())
        if k not in skip and (v is None or isinstance(v, str | int | float | bool | list))
    }


def _seeded(
    args: argparse.Namespace, name: str, run_one: Callable[[int, Path], dict[str, Any]]
) -> dict[str, Any]:
    return over_seeds(
        run_one,
        args.out,
        seeds=args.seeds,
        first_seed=args.seed,
        name=name,
        settings={"benchmark": name, **_settings(args)},
        resume=args.resume,
    )


def _threshold_params(args: argparse.Namespace) -> dict[str, Any] | None:
    """The threshold rules' parameters a command was given (None: the defaults of
    config.yaml): ``--threshold-params`` JSON, and ``--risk`` for every rule with a risk."""
    params: dict[str, Any] = {}
    if getattr(args, "threshold_params", None):
        try:
            params = dict(json.loads(args.threshold_params))
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"--threshold-params is not a JSON object: {exc}") from None
    if getattr(args, "risk", None) is not None:
        params["risk"] = args.risk
    return params or None


def _published(value: Any) -> Any:
    """A published figure is one number, whatever the seeds."""
    return value["mean"] if is_spread(value) else value


def _policy_rows(policies: dict[str, Any], adjusted: bool = False) -> list[Row]:
    rows = []
    for name, report in policies.items():
        row = [name, report["precision"], report["recall"], report["f1"]]
        if adjusted:
            row.append(report["point_adjusted"]["f1"])
        rows.append(row)
    return rows


def _print_policies(policies: dict[str, Any], adjusted: bool = False) -> None:
    header = ["threshold policy", "precision", "recall", "F1"]
    print(table(_policy_rows(policies, adjusted), header + (["F1 PA"] if adjusted else [])))


def _nab(args: argparse.Namespace) -> None:
    from streamdet.config import RetrainConfig
    from streamdet.evaluation import nab_run
    from streamdet.thresholds import rule_params

    params = json.loads(args.params) if args.params else None
    retrain = {
        **nab_run.BENCHMARK_RETRAIN,
        **{
            key: value
            for key, value in (
                ("every_events", args.retrain_every),
                ("min_events_between", args.retrain_every),
                ("history_events", args.retrain_history),
                ("epochs", args.retrain_epochs),
            )
            if value is not None
        },
    }
    lifecycle = nab_run.Lifecycle(
        threshold=rule_params({"policy": args.threshold_policy, **(_threshold_params(args) or {})}),
        retrain=None if args.retrain_every == 0 else RetrainConfig.model_validate(retrain),
        cooldown_rows=args.cooldown_rows,
    )
    summary = _seeded(
        args,
        "nab",
        lambda seed, out: nab_run.run(
            args.data,
            out,
            detector=args.detector,
            params=params,
            lifecycle=lifecycle,
            ablation=args.ablation,
            seed=seed,
            windows_file=args.windows_file,
        ),
    )
    rows = []
    for variant, report in summary["variants"].items():
        for name, r in report["profiles"].items():
            alerts = report["daemon_alerts"][name]
            preset = report.get("sensitivity_alerts", {}).get(name)
            rows.append(
                [
                    variant,
                    name,
                    r["score"],
                    r["tp_windows"],
                    r["fp_rows"],
                    alerts["score"],
                    alerts["tp_windows"],
                    alerts["fp_rows"],
                    f"{preset['sensitivity']}: {format_spread(preset['score'], 2)}"
                    if preset
                    else "-",
                ]
            )
    header = ["model", "profile", "NAB score", "TP win", "FP rows"]
    print(table(rows, [*header, "alerts: score", "TP win", "FP rows", "alerts at sensitivity"]))


def _vae_lstm_nab(args: argparse.Namespace) -> None:
    from streamdet.evaluation import vae_lstm_nab

    series = tuple(args.series.split(",")) if args.series else vae_lstm_nab.SERIES
    summary = _seeded(
        args,
        "vae_lstm_nab",
        lambda seed, out: vae_lstm_nab.run(
            args.data,
            out,
            series=series,
            window=args.window,
            n_windows=args.n_windows,
            code_size=args.code_size,
            raw=args.raw,
            epochs_vae=args.epochs_vae,
            epochs_lstm=args.epochs_lstm,
            threshold_perc=args.threshold_perc,
            threshold_policy=args.threshold_policy,
            threshold_params=_threshold_params(args),
            seed=seed,
        ),
    )
    rows = []
    for name, result in summary["series"].items():
        for number, seg in enumerate(result["segments"], 1):
            chosen = seg["headline"]
            rows.append(
                [
                    f"{name}/{number}",
                    chosen["f1"],
                    chosen["point_adjusted"]["f1"],
                    seg["oracle_best_f1"]["point_adjusted"]["f1"],
                    seg["auc"],
                ]
            )
    print(f"threshold policy: {args.threshold_policy} ({_threshold_params(args) or 'defaults'})")
    print(table(rows, ["series/segment", "F1 raw", "F1 PA", "oracle F1 PA", "AUC"]))


def _ecg5000(args: argparse.Namespace) -> None:
    from streamdet.evaluation import ecg5000

    result = _seeded(
        args,
        "ecg5000",
        lambda seed, out: ecg5000.run(
            args.data,
            out,
            epochs=args.epochs,
            validation_fraction=args.validation_fraction,
            patience=args.patience,
            seed=seed,
            teacher_forcing=args.teacher_forcing,
            page_defaults=args.page_defaults,
            threshold_policy=args.threshold_policy,
            threshold_params=_threshold_params(args),
        ),
    )
    m, p = result["metrics"], result["published"]
    print(
        table(
            [
                [
                    f"streamdet seq2seq ({args.threshold_policy})",
                    m["precision"],
                    m["recall"],
                    m["f1"],
                    m["accuracy"],
                    m["auc"],
                ],
                [
                    "published (alibi-detect)",
                    "",
                    "",
                    _published(p["f1"]),
                    _published(p["accuracy"]),
                    _published(p["auc"]),
                ],
            ],
            ["", "precision", "recall", "F1", "accuracy", "AUC"],
        )
    )
    _print_policies(result["policies"])


def _kdd99(args: argparse.Namespace) -> None:
    from streamdet.evaluation import kdd99

    result = _seeded(
        args,
        f"kdd99_{args.protocol}",
        lambda seed, out: kdd99.run(
            args.data,
            out,
            protocol=args.protocol,
            page_defaults=args.page_defaults,
            example_settings=args.example_settings,
            epochs=args.epochs,
            threshold_policy=args.threshold_policy,
            threshold_params=_threshold_params(args),
            seed=seed,
        ),
    )
    m, p = result["metrics"], result["published"]
    print(
        table(
            [
                [
                    f"streamdet vaegmm ({args.protocol}, {args.threshold_policy})",
                    m["precision"],
                    m["recall"],
                    m["f1"],
                    m["auc"],
                ],
                [
                    p["source"],
                    _published(p.get("precision", "")),
                    _published(p.get("recall", "")),
                    _published(p["f1"]),
                    "",
                ],
            ],
            ["", "precision", "recall", "F1", "AUC"],
        )
    )
    _print_policies(result["policies"])


def _tabular(args: argparse.Namespace) -> None:
    from streamdet.evaluation import tabular

    options = {
        "epochs": args.epochs,
        "threshold_policy": args.threshold_policy,
        "threshold_params": _threshold_params(args),
        "ensemble_trust": args.ensemble_trust,
    }
    if args.all:
        summary = tabular.run_all(
            args.all,
            args.out,
            seeds=args.seeds,
            first_seed=args.seed,
            resume=args.resume,
            **options,
        )
        detectors = (("vaegmm", "vaegmm"), ("iforest", "isolation_forest"), ("both", "ensemble"))
        rows = [
            [
                name,
                f"{t['rows']['mean']:.0f}",
                *(t[key]["auroc"] for _, key in detectors),
                *(t[key]["auprc"] for _, key in detectors),
                *(t[key]["f1"] for _, key in detectors),
            ]
            for name, t in summary["tables"].items()
        ]
        print(
            table(
                rows,
                [
                    "table",
                    "rows",
                    *(f"AUROC {label}" for label, _ in detectors),
                    *(f"AUPRC {label}" for label, _ in detectors),
                    *(f"F1 {label} ({args.threshold_policy})" for label, _ in detectors),
                ],
            )
        )
        print(
            "at least IsolationForest (mean AUROC): VAEGMM "
            f"{summary['vaegmm_at_least_isolation_forest']}, VAEGMM + IsolationForest "
            f"{summary['ensemble_at_least_isolation_forest']}"
        )
        return
    result = _seeded(
        args, "tabular", lambda seed, out: tabular.run(args.npz, out, seed=seed, **options)
    )
    rows = [
        [name, result[key]["auroc"], result[key]["auprc"], result[key]["f1"]]
        for name, key in (
            ("streamdet vaegmm", "vaegmm"),
            ("IsolationForest", "isolation_forest"),
            ("VAEGMM + IsolationForest", "ensemble"),
        )
    ]
    print(table(rows, ["", "AUROC", "AUPRC", f"F1 ({args.threshold_policy})"]))
    _print_policies(result["vaegmm"]["policies"])


def _mnist(args: argparse.Namespace) -> None:
    if args.task == "adversarial":
        _mnist_adversarial(args)
        return
    from streamdet.evaluation import mnist

    result = _seeded(
        args,
        "mnist_digit_holdout",
        lambda seed, out: mnist.run(
            args.data,
            out,
            digit=args.digit,
            epochs=args.epochs,
            score_loss=args.score_loss,
            train_limit=args.train_limit,
            params=json.loads(args.params) if args.params else None,
            recon_epochs=tuple(int(e) for e in args.recon_epochs.split(",") if e),
            threshold_params=_threshold_params(args),
            seed=seed,
        ),
    )
    print(
        table(
            [
                *[
                    [
                        f"streamdet image_vae (digit {args.digit}, {loss} score)",
                        by_loss["auroc"],
                        by_loss["auprc"],
                        by_loss["operating_point"]["recall"],
                        by_loss["operating_point"]["false_positive_rate"],
                    ]
                    for loss, by_loss in result["by_score_loss"].items()
                ],
                [
                    "seed project",
                    "",
                    "",
                    _published(result["seed_project"]["recall"]),
                    _published(result["seed_project"]["false_positive_rate"]),
                ],
            ],
            ["", "AUROC", "AUPRC", "recall", "FPR"],
        )
    )
    _print_policies(result["policies"])


def _mnist_adversarial(args: argparse.Namespace) -> None:
    from streamdet.evaluation import mnist_adversarial

    result = _seeded(
        args,
        "mnist_adversarial",
        lambda seed, out: mnist_adversarial.run(
            args.data,
            out,
            epochs=args.epochs,
            classifier_epochs=args.classifier_epochs,
            n_test=args.n_test,
            train_limit=args.train_limit,
            cw_iterations=args.cw_iterations,
            pgd_iterations=args.pgd_iterations,
            detector_params=json.loads(args.params) if args.params else None,
            seed=seed,
        ),
    )
    rows = [
        [
            name,
            a["attack_success_rate"],
            a["auroc"],
            a["accuracy_under_attack"],
            a["accuracy_after_correction"],
            a["share_of_clean_accuracy_restored"],
        ]
        for name, a in result["attacks"].items()
    ]
    print(
        f"classifier test accuracy {format_spread(result['classifier']['test_accuracy'])}; "
        f"clean accuracy on the attacked images {format_spread(result['clean']['accuracy'])}, "
        f"{format_spread(result['clean']['accuracy_after_correction'])} after correct()"
    )
    print(table(rows, ["attack", "success", "AUROC", "accuracy", "corrected", "share restored"]))


def _common(parser: argparse.ArgumentParser, out: str, policies: bool = True) -> None:
    parser.add_argument("--out", default=out)
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="run over this many seeds (from --seed) and report mean ± sd (default 3)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the seeds a run with the same options already finished in --out "
        "(an interrupted evaluation continues where it stopped)",
    )
    if policies:
        parser.add_argument(
            "--threshold-policy",
            choices=rule_policies(),
            default="protocol",
            help="whose alarms are the headline figures: the benchmark's own rule "
            "(protocol) or a threshold rule of the daemon; every rule is reported",
        )
    _rule_parameters(parser)


def _rule_parameters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--risk",
        type=float,
        help="the risk (target false-alarm rate per window) of every threshold rule that "
        "has one (default: each rule's own, as in config.yaml)",
    )
    parser.add_argument(
        "--threshold-params",
        help="threshold rules' parameters as JSON, each given to the rules that take it, "
        "e.g. '{\"tail_level\": 0.95}' (default: those of config.yaml)",
    )


def rule_policies() -> tuple[str, ...]:
    from streamdet.evaluation.thresholding import policies

    return policies()


def add_parser(commands: Any, registered: Callable[[str], Any]) -> None:
    """``evaluate`` and its benchmarks, on the top-level sub-command set."""
    evaluate = commands.add_parser("evaluate", help="measure a detector on a public benchmark")
    benchmarks = evaluate.add_subparsers(dest="benchmark", required=True)

    nab = benchmarks.add_parser("nab", help="any corpus in NAB layout, NAB scoring")
    nab.add_argument("--data", required=True, help="corpus root (data/, labels/, config/)")
    nab.add_argument(
        "--detector",
        type=registered("timeseries"),
        default="seq2seq",
        help="a registered timeseries detector (default seq2seq)",
    )
    _common(nab, "eval/nab", policies=False)
    nab.add_argument("--params", help="detector parameters as JSON, over the defaults")
    nab.add_argument(
        "--threshold-policy",
        choices=rule_policies()[1:],
        default="likelihood",
        help="each file's topic threshold.policy (default likelihood)",
    )
    nab.add_argument(
        "--cooldown-rows",
        type=int,
        default=400,
        help="alerts.cooldown_s of each file's topic, in rows of its sampling interval",
    )
    nab.add_argument(
        "--retrain-every",
        type=int,
        help="retrain.every_events of each file's topic (0: the warm-up model stays frozen; "
        "default: the benchmark's 4000)",
    )
    nab.add_argument("--retrain-history", type=int, help="retrain.history_events (4000)")
    nab.add_argument("--retrain-epochs", type=int, help="retrain.epochs (3)")
    nab.add_argument(
        "--ablation",
        action="store_true",
        help="replay every file a second time with the other lifecycle (frozen/continual)",
    )
    nab.add_argument("--windows-file", default="combined_windows.json")
    nab.set_defaults(func=_nab)

    vln = benchmarks.add_parser("vae-lstm-nab", help="the VAE-LSTM paper's 5 NAB series")
    vln.add_argument("--data", help="folder of the .npz files (default: shared data)")
    _common(vln, "eval/vae_lstm_nab")
    vln.add_argument("--series", help="comma-separated subset of the 5 series")
    vln.add_argument("--window", type=int, default=48, help="points per VAE window (l)")
    vln.add_argument("--n-windows", type=int, default=12, help="windows per LSTM sequence (k)")
    vln.add_argument("--code-size", type=int, default=6, help="VAE code size")
    vln.add_argument(
        "--raw",
        help="build the 5 series from a NAB-layout corpus (e.g. ../shared/data/nab) with the "
        "notebook's splits, instead of reading the .npz files",
    )
    vln.add_argument("--epochs-vae", type=int, default=20)
    vln.add_argument("--epochs-lstm", type=int, default=20)
    vln.add_argument(
        "--threshold-perc", type=float, default=99.0, help="protocol: validation percentile"
    )
    vln.set_defaults(func=_vae_lstm_nab)

    ecg = benchmarks.add_parser("ecg5000", help="alibi-detect's Seq2Seq ECG5000 protocol")
    ecg.add_argument("--data", help="folder with ECG5000_TRAIN.txt / _TEST.txt")
    _common(ecg, "eval/ecg5000")
    ecg.add_argument("--epochs", type=int, default=120, help="most epochs to train")
    ecg.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="hold out this share of the normal training beats and keep the epoch with the "
        "lowest loss on them (0: train on all, keep the last epoch)",
    )
    ecg.add_argument(
        "--patience",
        type=int,
        default=20,
        help="with a validation share: stop after N epochs "
        "without a better validation loss (0: run every epoch)",
    )
    ecg.add_argument(
        "--page-defaults",
        action="store_true",
        help="OutlierSeq2Seq as alibi-detect's page uses it (latent 100, fit defaults)",
    )
    ecg.add_argument(
        "--teacher-forcing",
        action="store_true",
        help="train the decoder on true previous values (ablation)",
    )
    ecg.set_defaults(func=_ecg5000)

    kdd = benchmarks.add_parser("kdd99", help="VAEGMM on KDD Cup 99 (alibi or DAGMM protocol)")
    kdd.add_argument("--data", help="folder with kddcup.data_10_percent.gz and kddcup.names")
    kdd.add_argument("--protocol", choices=["alibi", "dagmm"], default="alibi")
    _common(kdd, "eval/kdd99")
    kdd.add_argument("--epochs", type=int, default=30)
    settings = kdd.add_mutually_exclusive_group()
    settings.add_argument(
        "--page-defaults",
        action="store_true",
        help="alibi protocol: OutlierVAEGMM with alibi-detect's page networks and defaults",
    )
    settings.add_argument(
        "--example-settings",
        action="store_true",
        help="alibi protocol: OutlierVAEGMM as alibi-detect's KDD Cup example trains it "
        "(the run behind its published F1: 400,000 rows, 50 epochs, cov_elbo sim 0.0025)",
    )
    kdd.set_defaults(func=_kdd99)

    tab = benchmarks.add_parser(
        "tabular",
        help="VAEGMM, IsolationForest and both (an ensemble) on labelled tables (one, or a folder)",
    )
    which = tab.add_mutually_exclusive_group(required=True)
    which.add_argument("--npz", help="arrays X (rows x features) and y (1 = anomaly)")
    which.add_argument("--all", metavar="DIR", help="every .npz table in DIR, one summary")
    _common(tab, "eval/tabular")
    tab.add_argument("--epochs", type=int, default=50)
    tab.add_argument(
        "--ensemble-trust",
        choices=("equal", "held_out"),
        default="equal",
        help="the ensemble's trust: equal (the detector's default) or held_out (weights "
        "learnt from each member's false alarms on held-out rows)",
    )
    tab.set_defaults(func=_tabular)

    mn = benchmarks.add_parser("mnist", help="image VAE: MNIST digit hold-out")
    mn.add_argument(
        "--task",
        choices=["digit-holdout", "adversarial"],
        default="digit-holdout",
        help="digit-holdout: image VAE; adversarial: CNN + attacks + adversarial VAE",
    )
    mn.add_argument("--digit", type=int, default=5, choices=range(10))
    mn.add_argument("--data", help="folder with the MNIST files (default: shared data)")
    _common(mn, "eval/mnist")
    mn.add_argument("--epochs", type=int, default=10, help="VAE training epochs")
    mn.add_argument(
        "--score-loss",
        choices=["bce", "mse"],
        default="mse",
        help="digit-holdout: reconstruction loss used as the score (both are reported)",
    )
    adv = mn.add_argument_group("adversarial task")
    adv.add_argument("--classifier-epochs", type=int, default=3)
    adv.add_argument("--n-test", type=int, default=1000, help="test images to attack")
    mn.add_argument("--train-limit", type=int, help="train on a random N of the training images")
    adv.add_argument("--cw-iterations", type=int, default=100)
    adv.add_argument("--pgd-iterations", type=int, default=40)
    mn.add_argument(
        "--params",
        help="detector parameters as JSON (image_vae for digit-holdout, e.g. "
        "'{\"beta\": 0.0}'; adversarial_vae for adversarial)",
    )
    mn.add_argument(
        "--recon-epochs",
        default="1,5,10",
        help="digit-holdout: epochs whose reconstructions are drawn (comma-separated)",
    )
    mn.set_defaults(func=_mnist)
