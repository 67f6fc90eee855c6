#!/usr/bin/env python3
"""One transformer layer's forward and backward, measured in PyTorch on this machine, against the
simulator's time for the same layer (issue 12: what part of the H100 training rows' error is the layer's
own kernels).

Each row is a validation training row's model and micro-batch, run whole on one device in BF16 with
PyTorch's own ops: LayerNorm, the QKV GEMM, RoPE in PyTorch ops where the row has it,
scaled_dot_product_attention with a causal mask (FlashAttention-2 on an H100: twinbed's "flash2"), the
projection, dropout (p 0.1) and the residual add, LayerNorm, FC1, GeLU or SwiGLU, FC2, dropout and the
residual add. The simulator runs the same model (BF16, "flash2", "fused_elementwise": false, one device,
tp 1) and its time is the span of layer 0's forward ops and of its backward ops on rank 0
(scripts/layer-times.py's layer_spans). Known differences, all small against a layer's GEMMs: PyTorch adds
a GEMM's bias in the GEMM where twinbed counts a pass of its own; grouped-query attention's keys and values
are repeated to the query heads here (a copy twinbed does not count); SDPA's layout changes are views or
copies twinbed does not count.

Then the attention alone: scaled_dot_product_attention's forward and backward on the layer's queries,
keys and values (the keys and values repeated to the query heads), against the simulator's layer-0
flash_attn_fwd and flash_attn_bwd ops. Where the layer's ratio and the attention's differ, the rest of
the layer is where they part.

Measured with CUDA events (time.perf_counter on a CPU) over --iters passes after --warmup; the medians
are printed. Not a calibration: nothing here feeds the model.

  python3 scripts/gpu-layer-step.py [--row ID ...] [--iters N] [--device cuda|cpu] [--sim-device h100]
                                    [--twinbed PATH] [--json FILE]
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_ROWS = ["nemo-llama3-8b-8-h100-fp8", "nemo-gpt3-5b-64-h100-fp8"]


def load_layer_spans():
    spec = importlib.util.spec_from_file_location("layer_times", os.path.join(HERE, "layer-times.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.layer_spans


def find_row(data, row_id):
    folder = os.path.join(data, "training")
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            for row in json.load(f)["rows"]:
                if row["id"] == row_id:
                    return row
    sys.exit(f"gpu-layer-step: no training row '{row_id}' under {folder}")


def layer_model(row):
    """The row's model as this script runs it: BF16, FlashAttention-2, element-wise ops unfused."""
    m = dict(row["experiment"]["model"])
    m.update({"dtype": "bf16", "attention": "flash2", "fused_elementwise": False, "layers": 2})
    return m


def build_layer(torch, m):
    F = torch.nn.functional
    h, a = m["hidden"], m["heads"]
    kv = m.get("kv_heads", a)
    f = m.get("ffn_hidden", 4 * h)
    hd = h // a
    bias = m.get("bias", True)
    swiglu = m.get("activation") == "swiglu"
    rope = m.get("positions") == "rope"

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = torch.nn.LayerNorm(h)
            self.qkv = torch.nn.Linear(h, h + 2 * kv * hd, bias=bias)
            self.proj = torch.nn.Linear(h, h, bias=bias)
            self.ln2 = torch.nn.LayerNorm(h)
            self.fc1 = torch.nn.Linear(h, 2 * f if swiglu else f, bias=bias)
            self.fc2 = torch.nn.Linear(f, h, bias=bias)
            self.drop = torch.nn.Dropout(0.1)

        def rotate(self, t, cos, sin):  # RoPE on [b, heads, s, hd], PyTorch ops
            half = t.shape[-1] // 2
            rotated = torch.cat((-t[..., half:], t[..., :half]), dim=-1)
            return t * cos + rotated * sin

        def forward(self, x):  # x: [b, s, h]
            b, s, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split([h, kv * hd, kv * hd], dim=-1)
            q = q.view(b, s, a, hd).transpose(1, 2)
            k = k.view(b, s, kv, hd).transpose(1, 2)
            v = v.view(b, s, kv, hd).transpose(1, 2)
            if rope:
                position = torch.arange(s, device=x.device, dtype=torch.float32)
                inverse = 1.0 / (10000 ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd))
                angles = torch.outer(position, inverse)
                angles = torch.cat((angles, angles), dim=-1)
                cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
                q, k = self.rotate(q, cos, sin), self.rotate(k, cos, sin)
            if kv != a:
                k = k.repeat_interleave(a // kv, dim=1)
                v = v.repeat_interleave(a // kv, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.drop(self.proj(o.transpose(1, 2).reshape(b, s, h)))
            z = self.fc1(self.ln2(x))
            if swiglu:
                gate, up = z.chunk(2, dim=-1)
                z = F.silu(gate) * up
            else:
                z = F.gelu(z)
            return x + self.drop(self.fc2(z))

    return Layer()


def time_passes(torch, device, warmup, iters, forward_fn, backward_fn, reset):
    """Median milliseconds of forward_fn() and of backward_fn(its output) over `iters` passes."""
    cuda = device.startswith("cuda")
    forward, backward = [], []
    for i in range(warmup + iters):
        if cuda:
            marks = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
            marks[0].record()
            y = forward_fn()
            marks[1].record()
            backward_fn(y)
            marks[2].record()
            torch.cuda.synchronize()
            fwd, bwd = marks[0].elapsed_time(marks[1]), marks[1].elapsed_time(marks[2])
        else:
            t0 = time.perf_counter()
            y = forward_fn()
            t1 = time.perf_counter()
            backward_fn(y)
            t2 = time.perf_counter()
            fwd, bwd = 1e3 * (t1 - t0), 1e3 * (t2 - t1)
        reset()
        if i >= warmup:
            forward.append(fwd)
            backward.append(bwd)
    return statistics.median(forward), statistics.median(backward)


def measure(torch, m, batch, seq, device, warmup, iters):
    """Median forward and backward milliseconds of one layer on `device`."""
    dtype = torch.bfloat16
    layer = build_layer(torch, m).to(device=device, dtype=dtype).train()
    x = torch.randn(batch, seq, m["hidden"], device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn_like(x)

    def reset():
        x.grad = None
        layer.zero_grad(set_to_none=True)

    return time_passes(torch, device, warmup, iters, lambda: layer(x), lambda y: y.backward(grad), reset)


def measure_attention(torch, m, batch, seq, device, warmup, iters):
    """Median forward and backward milliseconds of the layer's causal attention alone on `device`."""
    shape = (batch, m["heads"], seq, m["hidden"] // m["heads"])
    q, k, v = (torch.randn(shape, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn(shape, device=device, dtype=torch.bfloat16)

    def reset():
        q.grad = k.grad = v.grad = None

    sdpa = torch.nn.functional.scaled_dot_product_attention
    return time_passes(torch, device, warmup, iters, lambda: sdpa(q, k, v, is_causal=True),
                       lambda o: o.backward(grad), reset)


def op_ms(trace_path, names):
    """Milliseconds of each named op on rank 0, micro-batch 0 (the trace's first of each name)."""
    with open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    found = {}
    for e in events:
        if e.get("ph") == "X" and e.get("pid") == 0 and e["name"] in names and e["name"] not in found:
            if e.get("args", {}).get("micro_batch", 0) in (0, -1):
                found[e["name"]] = e["dur"] / 1000.0  # us -> ms
    missing = [n for n in names if n not in found]
    if missing:
        sys.exit(f"gpu-layer-step: no {', '.join(missing)} on rank 0 in {trace_path}")
    return [found[n] for n in names]


def simulate(twinbed, m, batch, sim_device, layer_spans):
    """Layer 0's forward and backward spans, and its attention's forward and backward ops, in ms, of the
    same model simulated on one device."""
    experiment = {
        "name": "gpu-layer-step",
        "cluster": {"topology": "nvswitch-node", "ranks": 1, "device": sim_device},
        "model": m,
        "layout": {"dp": 1, "tp": 1, "pp": 1, "micro_batch": batch, "global_batch": batch},
        "simulation": {"fidelity": "full"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "experiment.json")
        with open(config, "w") as f:
            json.dump(experiment, f)
        out = os.path.join(tmp, "out")
        run = subprocess.run([twinbed, "run", config, "--backend", "sim", "--out", out], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"gpu-layer-step: twinbed run failed: {run.stderr.strip()}")
        trace = os.path.join(out, "trace.json")
        spans = layer_spans(trace, 0)
        attention = op_ms(trace, ["l0.flash_attn_fwd", "l0.flash_attn_bwd"])
    return spans["forward"], spans["backward"], attention[0], attention[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--row", action="append", help="a validation training row (repeatable; default: "
                        + ", ".join(DEFAULT_ROWS) + ")")
    parser.add_argument("--data", default=os.path.join(ROOT, "experiments/validation"))
    parser.add_argument("--iters", type=int, default=10, help="timed passes (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes first (default 3)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--sim-device", default="h100", help="the simulator's device preset (default h100)")
    parser.add_argument("--seq", type=int, default=None, help="override every row's sequence length")
    parser.add_argument("--twinbed", default=os.path.join(ROOT, "build/cli/twinbed"))
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    if args.iters < 1 or args.warmup < 0:
        sys.exit("gpu-layer-step: --iters must be >= 1 and --warmup >= 0")
    if not os.access(args.twinbed, os.X_OK):
        sys.exit(f"gpu-layer-step: no twinbed at {args.twinbed} (build it, or pass --twinbed)")
    try:
        import torch
    except ImportError:
        sys.exit("gpu-layer-step: PyTorch is not installed for this python3 (the GPU machine has it)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu-layer-step: --device cuda, but PyTorch sees no GPU")
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    layer_spans = load_layer_spans()

    print(f"# one layer, BF16, PyTorch {torch.__version__} on {name}, against twinbed's {args.sim_device}")
    print(f"# median of {args.iters} passes after {args.warmup}; ratio = simulated / measured")
    print(f"{'row':32s} {'part':9s} {'tokens':>7s} {'fwd ms':>8s} {'sim':>8s} {'ratio':>6s}   {'bwd ms':>8s} {'sim':>8s} {'ratio':>6s}")

    def line(row_id, part, tokens, fwd, sim_fwd, bwd, sim_bwd):
        print(f"{row_id:32s} {part:9s} {tokens:7d} {fwd:8.3f} {sim_fwd:8.3f} {sim_fwd / fwd:6.3f}"
              f"   {bwd:8.3f} {sim_bwd:8.3f} {sim_bwd / bwd:6.3f}")

    results = []
    for row_id in args.row or DEFAULT_ROWS:
        row = find_row(args.data, row_id)
        m = layer_model(row)
        if args.seq:
            m["seq_len"] = args.seq
        batch = row["experiment"]["layout"].get("micro_batch", 1)
        tokens = batch * m["seq_len"]
        fwd, bwd = measure(torch, m, batch, m["seq_len"], device, args.warmup, args.iters)
        att_fwd, att_bwd = measure_attention(torch, m, batch, m["seq_len"], device, args.warmup, args.iters)
        sim_fwd, sim_bwd, sim_att_fwd, sim_att_bwd = simulate(args.twinbed, m, batch, args.sim_device, layer_spans)
        results.append({"row": row_id, "tokens": tokens, "device": name, "forward_ms": fwd, "backward_ms": bwd,
                        "simulated_forward_ms": sim_fwd, "simulated_backward_ms": sim_bwd,
                        "attention_forward_ms": att_fwd, "attention_backward_ms": att_bwd,
                        "simulated_attention_forward_ms": sim_att_fwd,
                        "simulated_attention_backward_ms": sim_att_bwd})
        line(row_id, "layer", tokens, fwd, sim_fwd, bwd, sim_bwd)
        line(row_id, "attention", tokens, att_fwd, sim_att_fwd, att_bwd, sim_att_bwd)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sim_device": args.sim_device, "iters": args.iters, "rows": results}, f, indent=2)


if __name__ == "__main__":
    main()
