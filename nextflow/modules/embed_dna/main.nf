// DNABERT-S mean embeddings of a group of shards of nucleotide ORFs, from one sample or several.
// main.nf packs small shards together (up to --embed_group_tokens), so that a run over many
// small samples loads DNABERT-S once per task instead of once per sample: `virnucpro embed-dna
// --manifest` loads the model once and embeds each shard as if alone, into its own file,
// report and failed list, under <sample>/embeddings/.
// One task = one GPU: `accelerator 1` under a scheduler (it sets CUDA_VISIBLE_DEVICES), the
// binary's GPU lease under the local executor (profile local_gpu). Exit code 2 means
// "finished, some records failed": they are listed in the *.failed.tsv, the others are
// embedded, every report is written, and the task succeeds; an exit 2 without every report is
// a failure like any other.
process EMBED_DNA {
    tag "${meta.id} (${meta.members.size()} shards)"
    label 'process_gpu'

    input:
    // meta: [id: the group's name, members: one map per shard, in the order of `fasta`, each
    // the sample's meta with `shard`, the shard's key]. Each shard is staged in a folder of its
    // own (1/, 2/, ...): the shards of different samples have the same file names.
    tuple val(meta), path(fasta, arity: '1..*', stageAs: '?/*')
    // DNABERT-S directory, staged as `model` (for a Hugging Face cache snapshot: the
    // models--org--name directory, with model_subdir = snapshots/<rev>), and the signature of
    // its files, so that -resume re-embeds when the weights change (main.nf, modelInput).
    tuple path(model), val(model_subdir), val(model_sig)
    path config   // optional virnucpro TOML (`[]` when params.virnucpro_config is unset)

    output:
    tuple val(meta), path("*/embeddings/*.dna.safetensors"), emit: embeddings
    tuple val(meta), path("*/embeddings/*.dna.json")       , emit: report
    tuple val(meta), path('*/embeddings/*.failed.tsv')         , emit: failed, optional: true
    path 'versions.yml'                                         , emit: versions, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args     = task.ext.args ?: ''
    def cfg      = config ? "--config ${config}" : ''
    def model_path = model_subdir ? "${model}/${model_subdir}" : "${model}"
    def prefixes = meta.members.collect { m -> "${m.id}/embeddings/${m.id}.${m.shard}.dna" }
    def dirs     = meta.members.collect { m -> "${m.id}/embeddings" }.join(' ')
    def rows     = [fasta, prefixes].transpose().collect { f, p -> "${f} ${p} ${p}" }.join(' ')
    """
    mkdir -p ${dirs}
    printf '%s\\t%s.safetensors\\t%s.json\\n' ${rows} > embed_manifest.tsv
    virnucpro ${cfg} embed-dna \\
        ${args} \\
        --threads ${task.cpus} \\
        --model ${model_path} \\
        --manifest embed_manifest.tsv \\
        || { rc=\$?; if [ "\$rc" -ne 2 ]; then exit "\$rc"; fi; while IFS=\$'\\t' read -r _ _ report; do [ -s "\$report" ] || exit "\$rc"; done < embed_manifest.tsv; }

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """

    // What `virnucpro embed-dna` writes for empty shards: per shard the embeddings (left
    // empty here, nf-core's way with binary outputs), then the report, the last file it writes
    // and the marker of a finished step, with the real report's keys. No failed list: nothing
    // failed.
    stub:
    def prefixes = meta.members.collect { m -> "${m.id}/embeddings/${m.id}.${m.shard}.dna" }
    def dirs     = meta.members.collect { m -> "${m.id}/embeddings" }.join(' ')
    def pairs    = [fasta, prefixes].transpose().collect { f, p -> "${f} ${p}" }.join(' ')
    """
    mkdir -p ${dirs}
    set -- ${pairs}
    while [ "\$#" -gt 0 ]; do
    touch "\$2.safetensors"
    cat <<-END_REPORT > "\$2.json"
    {
      "input": "\$1",
      "output": "\$2.safetensors",
      "sequences": 0,
      "failed": 0,
      "failed_file": null,
      "resumed": 0,
      "tokens": 0,
      "dim": 0,
      "devices": "stub",
      "per_device": [],
      "precision": "f32",
      "dtype_read_back": {"weights": "f32", "activation": "f32"},
      "matmul_note": null,
      "batch_tokens": 0,
      "batches": 0,
      "wall_seconds": 0.0,
      "sequences_per_second": 0.0,
      "tokens_per_second": 0.0,
      "compute_seconds": 0.0,
      "compute_tokens_per_second": 0.0,
      "model_loads": 0,
      "model_load_seconds": 0.0,
      "peak_rss_mb": 0.0
    }
    END_REPORT
    shift 2
    done

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """
}
