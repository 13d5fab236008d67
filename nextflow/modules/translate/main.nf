// Chunk one sample's sequences and keep the stop-free six-frame ORFs, written as shards of at
// most `shard_size` ORFs (one nucleotide .fa + one protein .faa per shard) so that the embedding
// steps fan out over GPUs, one task per shard.
process TRANSLATE {
    tag "$meta.id"
    label 'process_low'

    container "${ workflow.containerEngine in ['singularity', 'apptainer'] && params.container_sif ? params.container_sif : params.container }"

    publishDir "${params.outdir}/${meta.id}/translate", mode: params.publish_dir_mode,
        saveAs: { name -> name.endsWith('translate.json') ? 'translate.json' : null }

    input:
    tuple val(meta), path(fasta)
    val chunk_size
    val shard_size
    path config   // optional virnucpro TOML (`[]` when params.virnucpro_config is unset)

    output:
    // Always at least one pair: a sample without any ORF gets one empty shard pair, which the
    // embed modules turn into empty embeddings and PREDICT into empty tables.
    tuple val(meta), path('translate/shards/*.identified_nucleotide.fa'), path('translate/shards/*.identified_protein.faa'), emit: shards
    tuple val(meta), path('translate/translate.json'), emit: report
    path 'versions.yml', emit: versions

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
        --threads ${task.cpus} \\
        --outdir translate \\
        ${fasta}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p translate/shards
    touch translate/shards/00000.identified_nucleotide.fa
    touch translate/shards/00000.identified_protein.faa
    echo '{}' > translate/translate.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """
}
