// The VirNucPro classifier on one sample's embeddings, gathered from all its shards (the join
// is by ORF id, so the order of the files does not matter; the workflow passes them sorted by
// shard anyway). Writes the original's tables, a per-sequence summary, a figure, and the
// sequences and chunks called viral as gzipped FASTA, copied from the sample's input FASTA and
// TRANSLATE's chunked.fa (so that nobody has to join tables to get them).
process PREDICT {
    tag "$meta.id"
    label 'process_medium'

    input:
    // dna, protein: lists, every shard's embeddings of the sample. fasta: the sample's input,
    // staged under input/ so that no name the user gave it (chunked.fa, predict.json, ...)
    // can collide with a staged input or an output of this task. chunks: TRANSLATE's
    // chunked.fa of the same sample.
    tuple val(meta), path(dna), path(protein), path(fasta, stageAs: 'input/*'), path(chunks)
    path classifier                             // 500_model.pth / 300_model.pth
    path config                                 // optional virnucpro TOML (`[]` when unset)

    output:
    tuple val(meta), path('prediction_results.txt')             , emit: results
    tuple val(meta), path('prediction_results_highestscore.csv'), emit: highestscore
    tuple val(meta), path('sequence_summary.tsv')               , emit: summary
    tuple val(meta), path('prediction.{svg,png}')               , emit: plots
    tuple val(meta), path('viral_sequences.fa.gz')              , emit: viral_sequences
    tuple val(meta), path('viral_chunks.fa.gz')                 , emit: viral_chunks
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
        --sequences ${fasta} \\
        --chunks ${chunks} \\
        --outdir .
    # -n: no file name or time in the gzip header, so the same calls give the same bytes (for
    # -resume, snapshots and checksums). predict.json keeps naming the .fa files it wrote.
    gzip -n viral_sequences.fa viral_chunks.fa

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """

    // What `virnucpro predict` writes for a sample without ORFs: the tables with their headers,
    // the figures, no viral sequence or chunk (gzip of nothing, the bytes the script's gzip -n
    // writes then), then predict.json, the last file it writes, with the real report's keys.
    // The PNG is left empty (nf-core's way with binary outputs).
    stub:
    """
    printf 'Sequence_ID\\tPrediction\\tscore1\\tscore2\\n' > prediction_results.txt
    printf 'Modified_ID\\tIs_Virus\\n' > prediction_results_highestscore.csv
    printf 'sequence_id\\tchunks_scored\\tchunks_virus\\tvirus_fraction\\tmax_virus_score\\tmean_chunk_virus_score\\tprediction\\n' > sequence_summary.tsv
    echo '<svg xmlns="http://www.w3.org/2000/svg" width="1400" height="700"/>' > prediction.svg
    touch prediction.png
    printf '' | gzip -n > viral_sequences.fa.gz
    printf '' | gzip -n > viral_chunks.fa.gz
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
      "viral_sequences_fasta": {"file": "viral_sequences.fa", "from": ["${fasta}"], "records": 0, "input_records": 0},
      "viral_chunks_fasta": {"file": "viral_chunks.fa", "from": ["${chunks}"], "records": 0, "input_records": 0},
      "wall_seconds": 0.0
    }
    END_REPORT

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro --version | sed 's/^virnucpro //')
    END_VERSIONS
    """
}
