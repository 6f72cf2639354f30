"""The served RAF-DB MobileFaceNet: the OpenCV Zoo's int8 ONNX file with each PRelu(x, slope) rewritten as
Max(x, slope * x), the same function wherever every slope is at most 1 (refused otherwise). ONNX Runtime's
PRelu kernel took a third of the model's time on one thread; Mul and Max take a fraction of it.

    python scripts/face_expression_export.py \\
        ../shared/models/face_expression_mobilefacenet/facial_expression_recognition_mobilefacenet_2022july_int8.onnx \\
        models/face_expression/mobilefacenet_int8.onnx

Needs the `onnx` package (the train extra); prints the largest difference between the two files' logits
on random inputs, which must be 0.
"""

import argparse

import numpy as np
import onnx
import onnxruntime
from onnx import helper, numpy_helper


def max_form(model):
    """The model with every PRelu node replaced by Mul then Max; its slopes must be constants <= 1."""
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        x, slope = node.input
        if slope not in constants or constants[slope].max() > 1:
            raise SystemExit(f"{node.name}: a slope over 1 (or not a constant): max(x, slope * x) would differ")
        scaled = f"{node.output[0]}_scaled"
        nodes += [helper.make_node("Mul", [x, slope], [scaled], name=f"{node.name}_mul"),
                  helper.make_node("Max", [x, scaled], list(node.output), name=f"{node.name}_max")]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def largest_difference(original, rewritten, inputs=16, seed=0):
    """The largest absolute difference between two ONNX files' outputs on random [-1, 1] inputs."""
    sessions = [onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]) for path in (original, rewritten)]
    name = sessions[0].get_inputs()[0].name
    shape = [dimension if isinstance(dimension, int) else 1 for dimension in sessions[0].get_inputs()[0].shape]
    generator = np.random.default_rng(seed)
    return max(float(np.abs(np.subtract(*[session.run(None, {name: batch})[0] for session in sessions])).max())
               for batch in generator.uniform(-1, 1, (inputs, *shape)).astype(np.float32))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original")
    parser.add_argument("out")
    args = parser.parse_args()
    original = onnx.load(args.original)
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in original.graph.initializer}
    slopes = np.concatenate([constants[node.input[1]].ravel() for node in original.graph.node if node.op_type == "PRelu"])
    onnx.save(max_form(original), args.out)
    print(f"{args.out}: slopes from {slopes.min():.3f} to {slopes.max():.3f}; largest difference from the original's "
          f"logits {largest_difference(args.original, args.out)}")


if __name__ == "__main__":
    main()
