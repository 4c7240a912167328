"""The two non-torch engines' runners: an ONNX file run by ONNX Runtime or by OpenVINO, float tensors in and out.

Both are set up as their own documentation says for CPU inference:

- ONNX Runtime (https://onnxruntime.ai/docs/performance/tune-performance/threading.html and .../graph-optimizations):
  all graph optimizations (level 3 includes the NCHWc layout transform MLAS's conv kernels run in), one intra-op
  pool of ``torch.get_num_threads()`` threads that spin between ops (no inter-op pool: sequential execution),
  the CPU memory arena and memory patterns on. The input is passed as a numpy view of the contiguous float32
  tensor, which ONNX Runtime's CPU provider wraps without a copy; IO binding would save nothing more on CPU (the
  only copy left is the output's, N x classes floats).
- OpenVINO (https://docs.openvino.ai/ "High-level Performance Hints", "Inference threads"): the LATENCY hint (one
  stream using every thread) for batch 1; the THROUGHPUT hint (several streams) for larger batches, with the batch
  split over that many concurrent infer requests, since one synchronous request runs on one stream only.
  ``INFERENCE_NUM_THREADS`` is torch's thread count; inference precision is f32 (OpenVINO would pick bf16 by itself
  on AMX / AVX512-BF16 CPUs, which is another dtype, not another engine).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch


class OnnxRuntimeRunner:
    """``runner(x)`` -> logits: an ONNX Runtime CPU session of an ONNX file, tuned for inference on ``threads``."""

    def __init__(self, path: str | Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = True
        # workers spin between the ops of one run instead of sleeping: lower latency for a dedicated process
        options.add_session_config_entry('session.intra_op.allow_spinning', '1')
        self.session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out, = self.session.run([self.output_name], {self.input_name: x.numpy()})
        return torch.from_numpy(out)


class OpenVinoRunner:
    """``runner(x)`` -> logits: an ONNX file compiled by OpenVINO for CPU, with the hint for ``batch``'s size.

    The compiled model keeps a dynamic batch axis, so any batch size runs; ``batch`` picks the hint (and how many
    concurrent requests a batch is split over).
    """

    def __init__(self, path: str | Path, input_shape: tuple[int, ...], threads: int):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        model.reshape({0: ov.PartialShape([-1, *input_shape[1:]])})  # fixed C x H x W: static kernels per layer
        hint = 'LATENCY' if input_shape[0] == 1 else 'THROUGHPUT'
        self.compiled = core.compile_model(model, 'CPU', {
            'PERFORMANCE_HINT': hint, 'INFERENCE_NUM_THREADS': threads, 'INFERENCE_PRECISION_HINT': 'f32'})
        streams = int(self.compiled.get_property('OPTIMAL_NUMBER_OF_INFER_REQUESTS')) if hint == 'THROUGHPUT' else 1
        self.requests = [self.compiled.create_infer_request() for _ in range(max(1, streams))]
        self.hint = hint

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.requests) == 1 or len(x) == 1:
            out = self.requests[0].infer({0: x.numpy()}, share_inputs=True)
            return torch.from_numpy(next(iter(out.values())).copy())
        chunks = x.split(math.ceil(len(x) / len(self.requests)))
        busy = list(zip(self.requests, chunks))
        for request, chunk in busy:  # the chunks stay referenced until every request is done with them
            request.start_async({0: chunk.numpy()}, share_inputs=True)
        for request, _ in busy:
            request.wait()
        return torch.cat([torch.from_numpy(request.get_output_tensor(0).data.copy()) for request, _ in busy])
