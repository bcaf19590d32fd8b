"""karyo.export: the training side (TensorFlow, tf2onnx): data, models, training, ONNX bundles."""
