"""Score calibration and per-class thresholds from labelled images (`ovdet calibrate`).

    ovdet calibrate --images imgs/ --annotations ann.json --model owlv2-b16 --target precision=0.9
    ovdet detect photo.jpg --classes "cat,dog" --calibration calibration.yaml

Modules, one job each:
  matching          detections -> true/false positive flags, COCO's matching by pycocotools
  fit               fitting the calibrators (temperature, Platt, isotonic) with scipy
  thresholds        precision-recall curves; the threshold for a target precision or best F1
  perclass          per-class fits with a shared fallback; k-fold cross-validation by image
  report            ECE, Brier, the printed report, reliability diagrams and PR curves
  pipeline          annotations + results -> a fitted, reported calibration; results rewriting
  command           the `ovdet calibrate` subcommand

The calibration file itself (reading, writing, model check, applying) and the calibrators'
maps are core modules, `ovdet.calibration` and `ovdet.calibrators`: every detector applies
them; only fitting lives here. Importing this package imports none of its modules.
"""
