// Chunk one sample's sequences and keep the stop-free six-frame ORFs, written as shards of at
// most `shard_size` ORFs (one nucleotide .fa + one protein .faa per shard) so that the embedding
// steps fan out over GPUs, one task per shard. The chunks themselves (chunked.fa, one file
// whatever the shard count) go to PREDICT, which copies the viral ones into viral_chunks.fa.
process TRANSLATE {
    tag "$meta.id"
    label 'process_low'

    input:
    tuple val(meta), path(fasta)
    val chunk_size
    val shard_size
    path config   // optional virnucpro TOML (`[]` when params.virnucpro_config is unset)

    output:
    // Always at least one pair: a sample without any ORF gets one empty shard pair, which the
    // embed modules turn into empty embeddings and PREDICT into empty tables.
    tuple val(meta), path('translate/shards/*.identified_nucleotide.fa'), path('translate/shards/*.identified_protein.faa'), emit: shards
    tuple val(meta), path('translate/chunked.fa'), emit: chunks
    tuple val(meta), path('translate/translate.json'), emit: report
    path 'versions.yml', emit: versions, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def cfg  = config ? "--config ${config}" : ''
    """
    virnucpro ${cfg} translate \\
        ${args} \\
        --chunk-size ${chunk_size} \\
        --shard-size ${shard_size} \\
        --write-chunks \\
        --threads ${task.cpus} \\
        --outdir translate \\
        ${fasta}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """

    // What `virnucpro translate` writes for a sample without ORFs: one empty shard pair, an
    // empty chunked.fa, then translate.json, the last file it writes, with the real report's
    // keys.
    stub:
    """
    mkdir -p translate/shards
    touch translate/chunked.fa
    touch translate/shards/00000.identified_nucleotide.fa
    touch translate/shards/00000.identified_protein.faa
    cat <<-END_REPORT > translate/translate.json
    {
      "input": "${fasta}",
      "chunk_size": ${chunk_size},
      "records": 0,
      "bases": 0,
      "chunks": 0,
      "orfs": 0,
      "records_skipped": 0,
      "skipped": [],
      "outputs": ["translate/chunked.fa", "translate/shards"],
      "shards": 1,
      "threads": ${task.cpus},
      "wall_seconds": 0.0,
      "mbp_per_second": 0.0
    }
    END_REPORT

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """
}
