// The VirNucPro classifier on one sample's embeddings, gathered from all its shards (the join
// is by ORF id, so the order of the files does not matter; the workflow passes them sorted by
// shard anyway). Writes the original's tables, a per-sequence summary and a figure.
process PREDICT {
    tag "$meta.id"
    label 'process_medium'

    container "${ workflow.containerEngine in ['singularity', 'apptainer'] && params.container_sif ? params.container_sif : params.container }"

    publishDir "${params.outdir}/${meta.id}", mode: params.publish_dir_mode,
        saveAs: { name -> name == 'versions.yml' ? null : name }

    input:
    tuple val(meta), path(dna), path(protein)   // lists: every shard's embeddings of the sample
    path classifier                             // 500_model.pth / 300_model.pth
    path config                                 // optional virnucpro TOML (`[]` when unset)

    output:
    tuple val(meta), path('prediction_results.txt')             , emit: results
    tuple val(meta), path('prediction_results_highestscore.csv'), emit: highestscore
    tuple val(meta), path('sequence_summary.tsv')               , emit: summary
    tuple val(meta), path('prediction.{svg,png}')               , emit: plots
    tuple val(meta), path('predict.json')                       , emit: report
    path 'versions.yml'                                         , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def cfg  = config ? "--config ${config}" : ''
    """
    virnucpro ${cfg} predict \\
        ${args} \\
        --classifier ${classifier} \\
        --dna ${dna} \\
        --protein ${protein} \\
        --outdir .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """

    stub:
    """
    touch prediction_results.txt
    touch prediction_results_highestscore.csv
    touch sequence_summary.tsv
    touch prediction.svg
    touch prediction.png
    echo '{}' > predict.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """
}
