"""Export layer (`pacb_edge.export`): ONNX, TensorRT and TFLite, each verified against PyTorch."""
