#!/usr/bin/env python3
"""The Python side of bench/esm_cpu.sh (ESM-2 on the CPU: ours vs fair-esm vs transformers).

  esm_cpu.py weights OUTDIR --layers L --dim D --heads H
      random f32 weights from gpu/make_models.py (HF names: OUTDIR/esm2_3B_random/, what
      transformers reads) and the same tensors as a fair-esm hub checkpoint OUTDIR/esm2.pt
      (`{"cfg": {"model": Namespace}, "model": state_dict}`, names
      `encoder.sentence_encoder.*`), what fair-esm and ours read.
  esm_cpu.py fair-esm ESM2.pt INPUT.faa OUTPUT.safetensors --threads N [--check CASES.json]
      fair-esm 2.0.0 as the original VirNucPro runs it: FastaBatchedDataset, batches from
      get_batch_indices(2048, extra_toks_per_seq=1) (length-sorted, (max_len + 1) x count <=
      2048), alphabet.get_batch_converter(), the last layer's representation (after
      emb_layer_norm_after), mean over residues 1..=min(L, 1024). Writes `embeddings` (input
      order) and OUTPUT.json like gpu/torch_baseline.py (tokens counted with <cls> and <eos>,
      as our --report counts them). Model loading is not timed; one batch of up to 4 sequences
      is embedded untimed first. --check first proves the runner on a fixture's cases.json.
  esm_cpu.py esm-cpp-weights HF_DIR OUT.safetensors
      the HF tensors of HF_DIR/model.safetensors plus what esm.cpp's safetensors loader insists
      on and gpu/make_models.py does not write: each layer's rotary
      `esm.encoder.layer.{i}.attention.self.rotary_embeddings.inv_freq` (1 / 10000^(2j/hd), the
      values fair-esm's and transformers' rotary embeddings compute) and the masked-LM head
      (`lm_head.*`: unused by the embedding; decoder tied to the token embedding, the rest
      identity/zero), in one file for esm.cpp.
  esm_cpu.py esm-cpp MODEL.safetensors INPUT.faa OUTPUT.safetensors --threads N
             [--int8 --calib CALIB.faa [--alpha A]] [--check CASES.json] [--packed]
      esm.cpp (PyPI esm-cpp 0.2.1, its own AVX-512/VNNI/AMX kernels) on the same proteins:
      ESM_NUM_THREADS=N (its thread pool, sized at the first model load);
      Model.load_from_safetensors; with --int8 its ahead-of-time W8A8 path before anything is
      timed: ActivationObserver statistics over CALIB.faa (Model.forward_with_observer, the
      99.9th percentile), Model.apply_smoothquant(stats, A) (default 0.5, its documented
      default) and Model.quantize_weights() (per-channel symmetric INT8 weights; activations
      quantised at run time). The mean embedding is ours: Model.forward_with_hidden_states (its
      only call that returns hidden states, one sequence a call), the last state (after the
      final layer norm), mean over the residues (tokens 1..L, <cls> and <eos> excluded). Times
      the embedding loop alone (loading, calibration and quantisation excluded; two short
      sequences embedded untimed first); writes `embeddings` and OUTPUT.json like the other
      runners (tokens with <cls> and <eos>). --packed also times Model.forward_scheduled over
      all the proteins (its packed, length-bucketed path; logits only, since it returns no
      hidden states), printed for reference. --check first proves the FP32 path on a
      fixture's goldens (1e-4).
  esm_cpu.py gemm --threads N
      torch.mm of two 2560x2560 f32 matrices (the 3B shape's width) at N threads: 2 n^3 FLOPs a
      product, best of several timed rounds. The dense f32 matmul rate PyTorch's BLAS attains on
      these cores at N threads (a practical ceiling for the model's GEMMs, not the datasheet peak).
  esm_cpu.py compare WORK INPUT.faa SHAPE LAYERS DIM [--gemm GFLOPS] [--summary TSV]
      the runs of one shape in WORK ({fair,hf,ours}.safetensors and their .json, and where
      present ours_bf16, ours_int8, esmcpp_fp32 and esmcpp_int8): tokens/s, useful GFLOP/s (unpadded: per
      layer and sequence of n tokens 24 d^2 n + 4 n^2 d), ours / the faster PyTorch path, ours
      reduced / esm.cpp INT8, the max abs difference of the f32 mean embeddings between each
      pair, the cosine (min over proteins, mean) and max abs difference of ours reduced and of
      both esm.cpp runs against ours f32, and with --gemm the share of the GEMM rate; appends a
      row to TSV.
Needs torch, numpy, safetensors; fair-esm==2.0.0 for `fair-esm`; esm-cpp==0.2.1 for `esm-cpp`.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ALPHABET_SIZE = 33

# HF EsmModel names (gpu/make_models.py) -> fair-esm ESM2 names, per layer and at the top.
LAYER_NAMES = {
    "attention.self.query": "self_attn.q_proj", "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj", "attention.output.dense": "self_attn.out_proj",
    "attention.LayerNorm": "self_attn_layer_norm", "intermediate.dense": "fc1",
    "output.dense": "fc2", "LayerNorm": "final_layer_norm",
}


def fair_name(hf):
    name = hf.removeprefix("esm.")
    if name == "embeddings.word_embeddings.weight":
        return "embed_tokens.weight"
    if name.startswith("encoder.emb_layer_norm_after."):
        return name.removeprefix("encoder.")
    rest = name.removeprefix("encoder.layer.")
    i, module = rest.split(".", 1)
    module, param = module.rsplit(".", 1)
    return f"layers.{i}.{LAYER_NAMES[module]}.{param}"


def weights(a):
    import torch
    from argparse import Namespace
    from safetensors import safe_open
    sys.path.insert(0, os.path.join(HERE, "gpu"))
    import make_models

    make_models.esm(a.outdir, a.layers, a.dim, a.heads, np.float32)
    hf = os.path.join(a.outdir, "esm2_3B_random", "model.safetensors")
    sd = {}
    with safe_open(hf, "pt") as f:
        for k in f.keys():
            sd["encoder.sentence_encoder." + fair_name(k)] = f.get_tensor(k)
    p = "encoder.sentence_encoder."
    head_dim = a.dim // a.heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for i in range(a.layers):
        sd[f"{p}layers.{i}.self_attn.rot_emb.inv_freq"] = inv_freq.clone()
    # The masked-LM head fair-esm's loader insists on (unused by the embedding; tied weight).
    sd["encoder.lm_head.weight"] = sd[p + "embed_tokens.weight"]
    sd["encoder.lm_head.bias"] = torch.zeros(ALPHABET_SIZE)
    sd["encoder.lm_head.dense.weight"] = torch.zeros(a.dim, a.dim)
    sd["encoder.lm_head.dense.bias"] = torch.zeros(a.dim)
    sd["encoder.lm_head.layer_norm.weight"] = torch.ones(a.dim)
    sd["encoder.lm_head.layer_norm.bias"] = torch.zeros(a.dim)
    cfg = Namespace(encoder_layers=a.layers, encoder_embed_dim=a.dim,
                    encoder_attention_heads=a.heads, token_dropout=True)
    out = os.path.join(a.outdir, "esm2.pt")
    torch.save({"cfg": {"model": cfg}, "model": sd}, out)
    print("wrote", out)


def load_fair_esm(path):
    import warnings

    import torch
    import esm

    warnings.filterwarnings("ignore", "Regression weights not found")  # no contact head here
    data = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    # What esm.pretrained.load_model_and_alphabet_local does, less the contact-regression file
    # it looks for beside a local checkpoint (the contact head is not used here).
    model, alphabet = esm.pretrained.load_model_and_alphabet_core("esm2_random", data, None)
    return model.eval(), alphabet


def fair_esm_embed(model, alphabet, dataset, batches):
    """The original's loop: one DataLoader batch at a time, mean of residues 1..=min(L, 1024)."""
    import torch

    loader = torch.utils.data.DataLoader(
        dataset, collate_fn=alphabet.get_batch_converter(), batch_sampler=batches)
    index = {label: i for i, label in enumerate(dataset.sequence_labels)}
    rows = {}
    layer = model.num_layers
    with torch.no_grad():
        for labels, strs, toks in loader:
            rep = model(toks, repr_layers=[layer], return_contacts=False)["representations"][layer]
            for i, label in enumerate(labels):
                n = min(1024, len(strs[i]))
                rows[index[label]] = rep[i, 1:n + 1].mean(0).numpy()
    return rows


def fair_esm(a):
    import torch
    from esm.data import FastaBatchedDataset
    from safetensors.numpy import save_file

    torch.set_num_threads(a.threads)
    if a.check:
        check_fair_esm(a.check)
    model, alphabet = load_fair_esm(a.model)
    dataset = FastaBatchedDataset.from_file(a.fasta)
    batches = dataset.get_batch_indices(2048, extra_toks_per_seq=1)
    warm = list(batches[-1][:4])  # the shortest batch's first few: kernels, allocator
    fair_esm_embed(model, alphabet, dataset, [warm])
    start = time.perf_counter()
    rows = fair_esm_embed(model, alphabet, dataset, batches)
    wall = time.perf_counter() - start
    emb = np.stack([rows[i] for i in range(len(dataset))]).astype(np.float32)
    save_file({"embeddings": emb}, a.output)
    ntok = sum(len(s) + 2 for s in dataset.sequence_strs)
    report = {
        "model": "fair-esm", "batch_tokens": 2048, "batches": len(batches),
        "sequences": len(emb), "tokens": ntok, "wall_seconds": wall,
        "sequences_per_second": len(emb) / wall, "tokens_per_second": ntok / wall,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    json.dump(report, open(a.output + ".json", "w"), indent=1)


def check_fair_esm(cases_path):
    """The runner on the tiny fixture's fair-esm checkpoint against its goldens (1e-4)."""
    import tempfile
    from esm.data import FastaBatchedDataset

    cases = json.load(open(cases_path))["cases"]
    with tempfile.NamedTemporaryFile("w", suffix=".faa") as f:
        for c in cases:
            f.write(f">{c['id']}\n{c['sequence']}\n")
        f.flush()
        dataset = FastaBatchedDataset.from_file(f.name)
    model, alphabet = load_fair_esm(os.path.join(os.path.dirname(cases_path),
                                                 "fair_esm_checkpoint.pt"))
    rows = fair_esm_embed(model, alphabet, dataset,
                          dataset.get_batch_indices(2048, extra_toks_per_seq=1))
    got = np.stack([rows[i] for i in range(len(cases))])
    want = np.array([c["embedding"] for c in cases], dtype=np.float32)
    diff = np.abs(got - want).max()
    if diff > 1e-4:
        sys.exit(f"fair-esm runner disagrees with {cases_path}: max abs diff {diff:.1e}")
    print(f"fair-esm runner matches {cases_path}: max abs diff {diff:.1e}")


def read_faa(path):
    """(id, sequence) pairs of a FASTA file, in file order."""
    recs, name, seq = [], None, []
    for line in open(path):
        line = line.strip()
        if line.startswith(">"):
            if name is not None:
                recs.append((name, "".join(seq)))
            name, seq = line[1:].split()[0], []
        elif line:
            seq.append(line)
    if name is not None:
        recs.append((name, "".join(seq)))
    return recs


def esm_cpp_weights(a):
    from safetensors.numpy import load_file, save_file

    cfg = json.load(open(os.path.join(a.hf_dir, "config.json")))
    t = load_file(os.path.join(a.hf_dir, "model.safetensors"))
    dim, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    head_dim = dim // heads
    inv_freq = (1.0 / 10000 ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    for i in range(cfg["num_hidden_layers"]):
        t[f"esm.encoder.layer.{i}.attention.self.rotary_embeddings.inv_freq"] = \
            inv_freq.astype(np.float32)
    dt = t["esm.embeddings.word_embeddings.weight"].dtype
    t.setdefault("lm_head.dense.weight", np.zeros((dim, dim), dt))
    t.setdefault("lm_head.dense.bias", np.zeros(dim, dt))
    t.setdefault("lm_head.layer_norm.weight", np.ones(dim, dt))
    t.setdefault("lm_head.layer_norm.bias", np.zeros(dim, dt))
    t.setdefault("lm_head.decoder.weight", t["esm.embeddings.word_embeddings.weight"].copy())
    t.setdefault("lm_head.bias", np.zeros(ALPHABET_SIZE, dt))
    save_file(t, a.output)
    print("wrote", a.output)


def esm_cpp_embed(model, tokenizer, seqs):
    """Mean of the last hidden state (after the final layer norm) over the residues."""
    rows = []
    for s in seqs:
        ids = np.asarray(tokenizer.encode(s, add_special=True, truncate=False), dtype=np.int32)
        if len(ids) != len(s) + 2:
            sys.exit(f"esm.cpp tokenised a {len(s)}-residue protein to {len(ids)} tokens")
        _, hidden = model.forward_with_hidden_states(ids)
        rows.append(hidden[-1][1:len(s) + 1].mean(0))
    return np.stack(rows).astype(np.float32)


def esm_cpp(a):
    # The thread pool is sized from ESM_NUM_THREADS at the first model load.
    os.environ["ESM_NUM_THREADS"] = str(a.threads)
    import esm_cpp as ec
    from safetensors.numpy import save_file

    tokenizer = ec.Tokenizer()
    if a.check:
        cases = json.load(open(a.check))["cases"]
        model = ec.Model.load_from_safetensors(
            os.path.join(os.path.dirname(a.check), "model.safetensors"))
        got = esm_cpp_embed(model, tokenizer, [c["sequence"] for c in cases])
        want = np.array([c["embedding"] for c in cases], dtype=np.float32)
        diff = np.abs(got - want).max()
        if diff > 1e-4:
            sys.exit(f"esm.cpp runner disagrees with {a.check}: max abs diff {diff:.1e}")
        print(f"esm.cpp runner (FP32) matches {a.check}: max abs diff {diff:.1e}")
    start = time.perf_counter()
    model = ec.Model.load_from_safetensors(a.model)
    load = time.perf_counter() - start
    quant = {"mode": "fp32"}
    if a.int8:
        start = time.perf_counter()
        calib = [s for _, s in read_faa(a.calib)]
        observer = ec.ActivationObserver()
        for s in calib:
            ids = np.asarray(tokenizer.encode(s, add_special=True, truncate=False), np.int32)
            model.forward_with_observer(ids, np.ones_like(ids), observer)
        model.apply_smoothquant(observer.percentile(99.9), a.alpha)
        model.quantize_weights()
        if not model.config.weights_quantized:
            sys.exit("esm.cpp: quantize_weights() left the weights unquantised")
        quant = {"mode": "int8 W8A8, SmoothQuant", "alpha": a.alpha, "percentile": 99.9,
                 "calibration_sequences": len(calib),
                 "calibration_and_quantisation_seconds": time.perf_counter() - start}
    recs = read_faa(a.fasta)
    seqs = [s for _, s in recs]
    esm_cpp_embed(model, tokenizer, sorted(seqs, key=len)[:2])  # warm-up: pool, workspace
    start = time.perf_counter()
    emb = esm_cpp_embed(model, tokenizer, seqs)
    wall = time.perf_counter() - start
    save_file({"embeddings": emb}, a.output)
    ntok = sum(len(s) + 2 for s in seqs)
    report = {
        "model": "esm.cpp", "version": ec.__version__, "isa": ec.current_isa(),
        "host_isa": ec.host_isa(), "threads": ec.Model.num_threads, "quantisation": quant,
        "load_seconds": load, "sequences": len(emb), "tokens": ntok, "wall_seconds": wall,
        "sequences_per_second": len(emb) / wall, "tokens_per_second": ntok / wall,
    }
    if a.packed:
        ids = [np.asarray(tokenizer.encode(s, add_special=True, truncate=False), np.int32)
               for s in seqs]
        start = time.perf_counter()
        model.forward_scheduled(ids)
        report["packed_logits_tokens_per_second"] = ntok / (time.perf_counter() - start)
    json.dump(report, open(a.output + ".json", "w"), indent=1)
    extra = (f"; forward_scheduled (packed, logits only) "
             f"{report['packed_logits_tokens_per_second']:.1f} tokens/s" if a.packed else "")
    print(f"esm.cpp {ec.__version__} {quant['mode']} on {report['isa']} "
          f"({report['threads']} threads): {ntok / wall:.1f} tokens/s{extra}")


def gemm(a):
    import torch

    torch.set_num_threads(a.threads)
    n = 2560
    x, y = torch.randn(n, n), torch.randn(n, n)
    torch.mm(x, y)
    best = float("inf")
    for _ in range(5):
        reps, start = 0, time.perf_counter()
        while reps < 2 or time.perf_counter() - start < 1.0:
            torch.mm(x, y)
            reps += 1
        best = min(best, (time.perf_counter() - start) / reps)
    print(f"{2 * n**3 / best / 1e9:.1f}")


def useful_gflop(lengths, layers, dim):
    """Unpadded model FLOPs: per layer, 24 d^2 n (q, k, v, out, fc1, fc2) + 4 n^2 d (scores,
    values) for a sequence of n tokens."""
    return sum(layers * (24 * dim * dim * n + 4 * n * n * dim) for n in lengths) / 1e9


def cosines(x, y):
    """Per-row cosine similarity of two embedding matrices (f64)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    return (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))


def compare(a):
    from safetensors.numpy import load_file

    w = a.work
    runs = [("fair-esm, original batching", "fair"), ("transformers EsmModel, SDPA", "hf"),
            ("ours f32 (embed-protein, compute)", "ours"),
            ("ours bf16 (embed-protein, compute)", "ours_bf16"),
            ("ours int8 (embed-protein, compute)", "ours_int8"),
            ("esm.cpp FP32", "esmcpp_fp32"), ("esm.cpp INT8 (W8A8, SmoothQuant)", "esmcpp_int8")]
    required = ("fair", "hf", "ours")
    runs = [(label, k) for label, k in runs
            if k in required or os.path.exists(f"{w}/{k}.safetensors.json")]
    emb = {k: load_file(f"{w}/{k}.safetensors")["embeddings"] for _, k in runs}
    rep = {k: json.load(open(f"{w}/{k}.safetensors.json")) for _, k in runs}
    from esm.data import FastaBatchedDataset
    lengths = [len(s) + 2 for s in FastaBatchedDataset.from_file(a.fasta).sequence_strs]
    if any(len(e) != len(lengths) for e in emb.values()):
        sys.exit(f"{w}: the runs embedded different numbers of sequences")
    flops = useful_gflop(lengths, a.layers, a.dim)
    # Like for like: PyTorch's and esm.cpp's timings are their forward passes (model loading
    # excluded), ours the embedding engine's compute time (`compute_seconds`: loading,
    # tokenising and writing excluded); the whole embed-protein step is printed beside it.
    whole = {}
    for k in ("ours", "ours_bf16", "ours_int8"):
        if k in rep:
            whole[k] = rep[k]["wall_seconds"]
            rep[k]["wall_seconds"] = rep[k]["compute_seconds"]
            rep[k]["tokens_per_second"] = rep[k]["compute_tokens_per_second"]
    for label, k in runs:
        r = rep[k]
        g = flops / r["wall_seconds"]
        share = f", {100 * g / a.gemm:.0f}% of the GEMM rate" if a.gemm else ""
        print(f"  {label:36} {r['tokens_per_second']:9.1f} tokens/s  {r['wall_seconds']:7.1f} s"
              f"  {g:6.1f} GFLOP/s{share}")
    for k, s in whole.items():
        print(f"  ({k}, the whole step with loading the model and writing: {s:.1f} s)")
    tps = {k: rep[k]["tokens_per_second"] for _, k in runs}
    torch_best = max(tps["fair"], tps["hf"])
    ratio = tps["ours"] / torch_best
    print(f"  ours f32 / the faster PyTorch path: {ratio:.2f}x")
    reduced = {}
    for k in ("ours_bf16", "ours_int8"):
        if k in tps and "esmcpp_int8" in tps:
            reduced[k] = f"{tps[k] / tps['esmcpp_int8']:.2f}"
            print(f"  {k.replace('_', ' ')} / esm.cpp INT8: {reduced[k]}x")
    if "esmcpp_fp32" in tps:
        print(f"  ours f32 / esm.cpp FP32: {tps['ours'] / tps['esmcpp_fp32']:.2f}x")
    diffs = {}
    for x, y in (("ours", "fair"), ("ours", "hf"), ("fair", "hf")):
        diffs[x + "-" + y] = float(np.abs(emb[x] - emb[y]).max())
        print(f"  max abs diff of the mean embeddings, {x} vs {y}: {diffs[x + '-' + y]:.2e}")
    acc = {}
    for k in ("ours_bf16", "ours_int8", "esmcpp_fp32", "esmcpp_int8"):
        if k in emb:
            c = cosines(emb[k], emb["ours"])
            acc[k] = (float(c.min()), float(c.mean()), float(np.abs(emb[k] - emb["ours"]).max()))
            print(f"  {k} vs ours f32: cosine min {acc[k][0]:.6f}, mean {acc[k][1]:.6f};"
                  f" max abs diff {acc[k][2]:.2e}")
    ours_g = flops / rep["ours"]["wall_seconds"]
    if not a.summary:
        return

    def cell(k, fmt):
        return fmt.format(tps[k]) if k in tps else "-"

    def accuracy(k):
        if k not in acc:
            return "-"
        return f"{acc[k][0]:.5f}/{acc[k][1]:.5f}/{acc[k][2]:.1e}"

    with open(a.summary, "a") as f:
        f.write("\t".join([
            a.shape, *(cell(k, "{:.1f}") for k in
                       ("fair", "hf", "ours", "ours_bf16", "ours_int8", "esmcpp_fp32",
                        "esmcpp_int8")),
            f"{ratio:.2f}", reduced.get("ours_bf16", "-"), reduced.get("ours_int8", "-"),
            f"{max(diffs.values()):.1e}",
            f"{acc['esmcpp_fp32'][2]:.1e}" if "esmcpp_fp32" in acc else "-",
            accuracy("ours_bf16"), accuracy("ours_int8"), accuracy("esmcpp_int8"),
            f"{100 * ours_g / a.gemm:.0f}%" if a.gemm else "-"]) + "\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("weights")
    p.add_argument("outdir")
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.set_defaults(run=weights)
    p = sub.add_parser("fair-esm")
    p.add_argument("model")
    p.add_argument("fasta")
    p.add_argument("output")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--check")
    p.set_defaults(run=fair_esm)
    p = sub.add_parser("esm-cpp-weights")
    p.add_argument("hf_dir")
    p.add_argument("output")
    p.set_defaults(run=esm_cpp_weights)
    p = sub.add_parser("esm-cpp")
    p.add_argument("model")
    p.add_argument("fasta")
    p.add_argument("output")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--int8", action="store_true")
    p.add_argument("--calib")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--check")
    p.add_argument("--packed", action="store_true")
    p.set_defaults(run=esm_cpp)
    p = sub.add_parser("gemm")
    p.add_argument("--threads", type=int, required=True)
    p.set_defaults(run=gemm)
    p = sub.add_parser("compare")
    p.add_argument("work")
    p.add_argument("fasta")
    p.add_argument("shape")
    p.add_argument("layers", type=int)
    p.add_argument("dim", type=int)
    p.add_argument("--gemm", type=float)
    p.add_argument("--summary")
    p.set_defaults(run=compare)
    a = ap.parse_args()
    a.run(a)


if __name__ == "__main__":
    main()
