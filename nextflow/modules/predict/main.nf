// The VirNucPro classifier on one sample's embeddings, gathered from all its shards (the join
// is by ORF id, so the order of the files does not matter; the workflow passes them sorted by
// shard anyway). Writes the original's tables, a per-sequence summary and a figure.
process PREDICT {
    tag "$meta.id"
    label 'process_medium'

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
    path 'versions.yml'                                         , emit: versions, topic: versions

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

    // What `virnucpro predict` writes for a sample without ORFs: the tables with their headers,
    // the figures, then predict.json, the last file it writes, with the real report's keys.
    // The PNG is left empty (nf-core's way with binary outputs).
    stub:
    """
    printf 'Sequence_ID\\tPrediction\\tscore1\\tscore2\\n' > prediction_results.txt
    printf 'Modified_ID\\tIs_Virus\\n' > prediction_results_highestscore.csv
    printf 'sequence_id\\tchunks_scored\\tchunks_virus\\tvirus_fraction\\tmax_virus_score\\tmean_chunk_virus_score\\tprediction\\n' > sequence_summary.tsv
    echo '<svg xmlns="http://www.w3.org/2000/svg" width="1400" height="700"/>' > prediction.svg
    touch prediction.png
    cat <<-END_REPORT > predict.json
    {
      "orfs_scored": 0,
      "orfs_virus": 0,
      "chunks": 0,
      "chunks_virus": 0,
      "sequences": 0,
      "sequences_virus": 0,
      "dna_only_ids": 0,
      "protein_only_ids": 0,
      "feature_dim": 0,
      "dna_model": "stub",
      "protein_model": "stub",
      "classifier": "${classifier}",
      "classifier_sha256": "stub",
      "wall_seconds": 0.0
    }
    END_REPORT

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """
}
