#!/usr/bin/env nextflow
/*
 * virnucpro: find viral sequences with VirNucPro's method (six-frame ORFs, DNABERT-S + ESM-2
 * embeddings, an MLP), fanned out over every GPU of every node.
 *
 *   samplesheet (sample,fasta) or FASTA glob
 *     -> TRANSLATE      per sample, ORFs cut into shards of --shard_size
 *     -> EMBED_DNA      per shard, one GPU each
 *     -> EMBED_PROTEIN  per shard, one GPU each
 *     -> PREDICT        per sample, as soon as all of its shards are embedded
 *     -> results/<sample>/...
 *
 * Usage and profiles: README.md, "Running with Nextflow". Parameters: nextflow.config and
 * nextflow_schema.json.
 */

include { TRANSLATE     } from './modules/translate/main'
include { EMBED_DNA     } from './modules/embed_dna/main'
include { EMBED_PROTEIN } from './modules/embed_protein/main'
include { PREDICT       } from './modules/predict/main'

workflow {
    if (!params.input) {
        error "--input is required: a samplesheet CSV (columns sample,fasta) or a FASTA path/glob"
    }
    ['dnabert', 'esm', 'classifier'].each { name ->
        if (!params[name]) {
            error "--${name} is required (see README.md, 'Real use: the published models')"
        }
    }
    if (!(params.chunk_size in [300, 500])) {
        log.warn "--chunk_size ${params.chunk_size}: the published classifiers were trained on 300 or 500"
    }

    def dnabert    = file(params.dnabert, checkIfExists: true)
    def esm        = file(params.esm, checkIfExists: true)
    def classifier = file(params.classifier, checkIfExists: true)
    // Optional inputs are passed as [] (nothing staged), as nf-core modules do.
    def toml       = params.virnucpro_config ? file(params.virnucpro_config, checkIfExists: true) : []

    TRANSLATE(samplesFrom(params.input), params.chunk_size, params.shard_size, toml)

    TRANSLATE.out.report.subscribe { meta, report ->
        if (new groovy.json.JsonSlurper().parseText(report.text).orfs == 0) {
            log.warn "Sample ${meta.id}: no ORF kept (empty or too short sequences): its result tables will be empty"
        }
    }

    // [meta + [shards: n], shard key, nucleotide .fa, protein .faa], one item per shard.
    def shards = TRANSLATE.out.shards.flatMap { meta, nucleotide, protein -> pairShards(meta, nucleotide, protein) }

    EMBED_DNA(shards.map { meta, key, nucleotide, protein -> [meta, key, nucleotide] }, dnabert, toml)
    EMBED_PROTEIN(shards.map { meta, key, nucleotide, protein -> [meta, key, protein] }, esm, toml)

    // Pair each shard's two embeddings, then gather a sample's shards. groupKey carries the
    // sample's shard count, so a sample goes to PREDICT as soon as its last shard is embedded
    // instead of waiting for every sample's embeddings (the end of the channel).
    def embeddings = EMBED_DNA.out.embeddings
        .map { meta, key, dna -> [meta.id, key, meta, dna] }
        .join(EMBED_PROTEIN.out.embeddings.map { meta, key, protein -> [meta.id, key, protein] }, by: [0, 1])
        .map { id, key, meta, dna, protein -> [groupKey(id, meta.shards), key, meta, dna, protein] }
        .groupTuple()
        .map { id, keys, metas, dna, protein ->
            def rows = [keys, dna, protein].transpose().sort { row -> row[0] }
            [metas[0].findAll { k, v -> k != 'shards' }, rows.collect { row -> row[1] }, rows.collect { row -> row[2] }]
        }

    PREDICT(embeddings, classifier, toml)

    TRANSLATE.out.versions
        .mix(EMBED_DNA.out.versions, EMBED_PROTEIN.out.versions, PREDICT.out.versions)
        .unique { versions -> versions.text }
        .collectFile(name: 'versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true)
}

// [[id: sample], fasta] per sample, from a samplesheet CSV (header `sample,fasta`; relative
// FASTA paths are relative to the samplesheet) or from a FASTA path/glob (id = file name up to
// the first dot).
def samplesFrom(String input) {
    if (!input.toLowerCase().endsWith('.csv')) {
        return channel.fromPath(input, checkIfExists: true)
            .map { fasta -> [[id: fasta.simpleName], fasta] }
            .toList()
            .flatMap { samples -> checkSamples(samples, input) }
    }
    def sheet = file(input, checkIfExists: true)
    return channel.fromPath(sheet)
        .splitCsv(header: true, strip: true)
        .map { row -> sampleRow(row, sheet) }
        .toList()
        .flatMap { samples -> checkSamples(samples, input) }
}

def sampleRow(Map row, sheet) {
    if (!row.sample || !row.fasta) {
        error "Samplesheet ${sheet}: every row needs the columns 'sample' and 'fasta' (got ${row})"
    }
    // Absolute paths and URLs (s3://, https://, ...) as they are; others beside the samplesheet.
    def absolute = row.fasta.startsWith('/') || row.fasta.contains('://')
    def fasta = absolute ? file(row.fasta) : sheet.parent.resolve(row.fasta)
    if (!fasta.exists()) {
        error "Samplesheet ${sheet}: sample '${row.sample}': FASTA ${fasta} does not exist"
    }
    return [[id: row.sample], fasta]
}

// Sample ids name output directories and embedding files: unique and path-safe.
def checkSamples(List samples, String input) {
    if (!samples) {
        error "No samples in ${input}"
    }
    def ids = samples.collect { sample -> sample[0].id }
    def bad = ids.findAll { id -> !(id ==~ /[A-Za-z0-9_.-]+/) }
    if (bad) {
        error "${input}: sample ids may only contain letters, digits, '.', '_' and '-': ${bad.join(', ')}"
    }
    def dup = ids.findAll { id -> ids.count(id) > 1 }.unique()
    if (dup) {
        error "${input}: duplicate sample ids ${dup.join(', ')}"
    }
    return samples
}

// TRANSLATE writes shards/<k>.identified_nucleotide.fa + <k>.identified_protein.faa: pair them
// by <k> and tag each with the sample's shard count (for groupKey).
def pairShards(Map meta, nucleotide, protein) {
    def nuc  = nucleotide instanceof List ? nucleotide : [nucleotide]
    def prot = (protein instanceof List ? protein : [protein]).collectEntries { f -> [(shardKey(f)): f] }
    if (nuc.size() != prot.size()) {
        error "TRANSLATE (${meta.id}): ${nuc.size()} nucleotide shards but ${prot.size()} protein shards"
    }
    return nuc.collect { f ->
        def key = shardKey(f)
        if (!prot.containsKey(key)) {
            error "TRANSLATE (${meta.id}): shard ${key} has no protein file"
        }
        [meta + [shards: nuc.size()], key, f, prot[key]]
    }
}

def shardKey(f) {
    return f.name.tokenize('.')[0]
}
