"""karyo.calibration: FP16 and INT8 variants of a bundle, with measured accuracy drift."""
