// ESM-2 mean embeddings of one shard of protein ORFs. One task = one GPU: `accelerator 1`
// under a scheduler (it sets CUDA_VISIBLE_DEVICES), the binary's GPU lease under the local
// executor (profile local_gpu). Exit code 2 means "finished, some records failed": they are
// listed in the *.failed.tsv, the others are embedded, the report is written, and the task
// succeeds; an exit 2 without the report is a failure like any other.
process EMBED_PROTEIN {
    tag "${meta.id}:${shard}"
    label 'process_gpu'

    input:
    tuple val(meta), val(shard), path(fasta)
    // ESM-2: Hugging Face directory or fair-esm .pt file, staged as `model` (for a Hugging Face cache snapshot: the
    // models--org--name directory, with model_subdir = snapshots/<rev>), and the signature of
    // its files, so that -resume re-embeds when the weights change (main.nf, modelInput).
    tuple path(model), val(model_subdir), val(model_sig)
    path config   // optional virnucpro TOML (`[]` when params.virnucpro_config is unset)

    output:
    tuple val(meta), val(shard), path("*.protein.safetensors"), emit: embeddings
    tuple val(meta), val(shard), path("*.protein.json")       , emit: report
    tuple val(meta), val(shard), path('*.failed.tsv')                            , emit: failed, optional: true
    path 'versions.yml'                                                          , emit: versions, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args   = task.ext.args ?: ''
    def cfg    = config ? "--config ${config}" : ''
    def model_path = model_subdir ? "${model}/${model_subdir}" : "${model}"
    def prefix = task.ext.prefix ?: "${meta.id}.${shard}.protein"
    """
    virnucpro ${cfg} embed-protein \\
        ${args} \\
        --threads ${task.cpus} \\
        --model ${model_path} \\
        --output ${prefix}.safetensors \\
        --report ${prefix}.json \\
        ${fasta} \\
        || { rc=\$?; if [ "\$rc" -ne 2 ] || [ ! -s ${prefix}.json ]; then exit "\$rc"; fi; }

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """

    // What `virnucpro embed-protein` writes for an empty shard: the embeddings (left empty here,
    // nf-core's way with binary outputs), then the report, the last file it writes and the
    // marker of a finished step, with the real report's keys. No failed list: nothing failed.
    stub:
    def prefix = task.ext.prefix ?: "${meta.id}.${shard}.protein"
    """
    touch ${prefix}.safetensors
    cat <<-END_REPORT > ${prefix}.json
    {
      "input": "${fasta}",
      "output": "${prefix}.safetensors",
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
      "peak_rss_mb": 0.0
    }
    END_REPORT

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """
}
