#!/usr/bin/env nextflow
/*
 * virnucpro: find viral sequences with VirNucPro's method (six-frame ORFs, DNABERT-S + ESM-2
 * embeddings, an MLP), fanned out over every GPU of every node.
 *
 *   models given as Hub ids / 500 / 300 / URL -> FETCH_MODELS once (storeDir), or --hf_home
 *   samplesheet (sample,fasta) or FASTA glob
 *     -> TRANSLATE      per sample, ORFs cut into shards of --shard_size
 *     -> EMBED_DNA      per group of shards (one GPU each): a shard alone, or small shards of
 *     -> EMBED_PROTEIN  several samples together up to --embed_group_tokens, so that the
 *                       models are loaded once per task rather than once per sample
 *     -> PREDICT        per sample, as soon as all of its shards are embedded (with the
 *                       sample's FASTA and chunks: viral_sequences.fa.gz, viral_chunks.fa.gz)
 *     -> results/<sample>/...
 *
 * Usage and profiles: README.md, "Running with Nextflow". Parameters: nextflow.config and
 * nextflow_schema.json.
 */

include { validateParameters; paramsSummaryLog; samplesheetToList } from 'plugin/nf-schema'

include { FETCH_MODELS  } from './modules/fetch_models/main'
include { TRANSLATE     } from './modules/translate/main'
include { EMBED_DNA     } from './modules/embed_dna/main'
include { EMBED_PROTEIN } from './modules/embed_protein/main'
include { PREDICT       } from './modules/predict/main'

workflow {
    // Types, ranges and enums of every parameter, from nextflow_schema.json (`--help` is
    // nf-schema's, from the same schema: validation.help in nextflow.config).
    validateParameters()
    log.info paramsSummaryLog(workflow)
    checkParams()

    if (!params.input) {
        error "--input is required: a samplesheet CSV (columns sample,fasta) or a FASTA path/glob"
    }
    ['dnabert', 'esm'].each { name ->
        if (!params[name]) {
            error "--${name} is required (see README.md, 'Real use: the published models')"
        }
    }
    if (!(intParam('chunk_size') in [300, 500])) {
        log.warn "--chunk_size ${params.chunk_size}: the published classifiers were trained on 300 or 500"
    }

    // Models given as Hub ids (org/name[@revision]) or classifiers given as 500, 300 or a URL:
    // read from --hf_home when given, else fetched once by FETCH_MODELS (storeDir: the next
    // run finds them without a task). Local paths are used as they are.
    def specs = [
        dnabert   : params.dnabert.toString(),
        esm       : params.esm.toString(),
        classifier: (params.classifier ?: defaultClassifier()).toString(),
    ]
    def remote = params.hf_home ? [] : specs.findAll { kind, given -> isRemote(kind, given) }
    FETCH_MODELS(channel.fromList(remote.collect { kind, given -> [kind, given, storeHome(kind, given), "${storeHome(kind, given)}/${storePath(kind, given)}".toString()] }))

    // [model to stage, path of the model inside it, signature of its files]: see modelInput().
    def dnabert    = modelChannel('dnabert', specs.dnabert, FETCH_MODELS.out.model)
    def esm        = modelChannel('esm', specs.esm, FETCH_MODELS.out.model)
    def classifier = modelChannel('classifier', specs.classifier, FETCH_MODELS.out.model)
    // Optional inputs are passed as [] (nothing staged), as nf-core modules do.
    def toml       = params.virnucpro_config ? file(params.virnucpro_config, checkIfExists: true) : []

    def samples    = samplesFrom(params.input)

    TRANSLATE(samples, intParam('chunk_size'), intParam('shard_size'), toml)

    TRANSLATE.out.report.subscribe { meta, report ->
        if (new groovy.json.JsonSlurper().parseText(report.text).orfs == 0) {
            log.warn "Sample ${meta.id}: no ORF kept (empty or too short sequences): its result tables will be empty"
        }
    }

    // [meta + [shards: n], shard key, nucleotide .fa, protein .faa], one item per shard.
    def shards = TRANSLATE.out.shards.flatMap { meta, nucleotide, protein -> pairShards(meta, nucleotide, protein) }

    // Shards packed into embedding tasks up to --embed_group_tokens (embedGroups): loading
    // ESM-2 3B takes longer than embedding a small sample, so many small samples share a task
    // and its one model load. The packing waits for every TRANSLATE (toList) so that it can
    // sort: the same inputs give the same groups, which -resume needs to find its tasks.
    def groups = shards.toList().flatMap { all -> embedGroups(all, intParam('embed_group_tokens')) }
    EMBED_DNA(groups.map { meta, nucleotide, protein -> [meta, nucleotide] }, dnabert, toml)
    EMBED_PROTEIN(groups.map { meta, nucleotide, protein -> [meta, protein] }, esm, toml)

    // Each group's files back to [sample meta + [shards: n], shard key, file], one item per
    // shard, as the steps below have always taken them.
    def dnaEmbeddings     = EMBED_DNA.out.embeddings.flatMap { group, files -> memberFiles('EMBED_DNA', group, files, '.dna.safetensors', true) }
    def proteinEmbeddings = EMBED_PROTEIN.out.embeddings.flatMap { group, files -> memberFiles('EMBED_PROTEIN', group, files, '.protein.safetensors', true) }
    def dnaReports        = EMBED_DNA.out.report.flatMap { group, files -> memberFiles('EMBED_DNA', group, files, '.dna.json', true) }
    def proteinReports    = EMBED_PROTEIN.out.report.flatMap { group, files -> memberFiles('EMBED_PROTEIN', group, files, '.protein.json', true) }

    // Pair each shard's two embeddings, then gather a sample's shards. groupKey carries the
    // sample's shard count, so a sample goes to PREDICT as soon as its last shard is embedded
    // instead of waiting for every sample's embeddings (the end of the channel).
    // A shard embedded by one step but not the other (a task failed, or was skipped by an
    // errorStrategy 'ignore' of the user's) must fail the run, not silently drop the sample:
    // join would discard the unmatched item, and groupTuple a group smaller than its groupKey
    // size; failOnMismatch/failOnDuplicate and remainder + the count check make both loud.
    def embeddings = dnaEmbeddings
        .map { meta, key, dna -> [meta.id, key, meta, dna] }
        .join(proteinEmbeddings.map { meta, key, protein -> [meta.id, key, protein] }, by: [0, 1], failOnMismatch: true, failOnDuplicate: true)
        .map { id, key, meta, dna, protein -> [groupKey(id, meta.shards), key, meta, dna, protein] }
        .groupTuple(remainder: true)
        .map { id, keys, metas, dna, protein ->
            def meta = metas[0]
            if (keys.size() != meta.shards) {
                error "Sample ${meta.id}: ${keys.size()} of its ${meta.shards} shards were embedded (see the failed or skipped EMBED_DNA/EMBED_PROTEIN tasks): not predicting from part of a sample"
            }
            def rows = [keys, dna, protein].transpose().sort { row -> row[0] }
            [meta.findAll { k, v -> k != 'shards' }, rows.collect { row -> row[1] }, rows.collect { row -> row[2] }]
        }

    // What the grouping saved, in the reports' own figures: model loads (one per embedding
    // task and device) and their seconds against the seconds spent embedding.
    dnaReports.map { meta, shard, json -> ['DNABERT-S', readReport(json)] }
        .mix(proteinReports.map { meta, shard, json -> ['ESM-2', readReport(json)] })
        .groupTuple(remainder: true)
        .subscribe { model, reports ->
            def loads = reports.collect { r -> r.model_loads as long }.sum(0L)
            def loading = reports.collect { r -> r.model_load_seconds as double }.sum(0d)
            def computing = reports.collect { r -> r.compute_seconds as double }.sum(0d)
            log.info "${model}: ${reports.size()} shard(s) embedded with ${loads} model load(s) in ${String.format('%.1f', loading)} s, embedding ${String.format('%.1f', computing)} s"
        }

    // What PREDICT copies the viral sequences and chunks from, with the embeddings: the sample's
    // input FASTA and TRANSLATE's chunked.fa, joined by sample id so that one task gets one
    // sample's files whatever order the channels deliver them in; failOnMismatch and
    // failOnDuplicate make a sample missing from one side fail the run instead of vanishing.
    def predictInputs = embeddings
        .map { meta, dna, protein -> [meta.id, meta, dna, protein] }
        .join(samples.map { meta, fasta -> [meta.id, fasta] }, failOnMismatch: true, failOnDuplicate: true)
        .join(TRANSLATE.out.chunks.map { meta, chunks -> [meta.id, chunks] }, failOnMismatch: true, failOnDuplicate: true)
        .map { id, meta, dna, protein, fasta, chunks -> [meta, dna, protein, fasta, chunks] }

    PREDICT(predictInputs, classifier, toml)

    // Records an embedding step could not embed (it exits 2, lists them in <output>.failed.tsv
    // and goes on): the sample is predicted without them. Said per sample, gathered into
    // pipeline_info/failed_records.tsv and counted in the summary table below.
    EMBED_DNA.out.failed.flatMap { group, files -> memberFiles('EMBED_DNA', group, files, '.dna.safetensors.failed.tsv', false) }
        .mix(EMBED_PROTEIN.out.failed.flatMap { group, files -> memberFiles('EMBED_PROTEIN', group, files, '.protein.safetensors.failed.tsv', false) })
        .collectFile(name: 'failed_records.tsv', storeDir: "${params.outdir}/pipeline_info", keepHeader: true, skip: 1, sort: true) { meta, shard, tsv ->
            failedRows(meta.id, shard, tsv.text)
        }

    // One row per sample from the reports the steps write (translate.json, every shard's
    // embedding reports, predict.json): pipeline_info/virnucpro_summary.tsv, and the same as
    // MultiQC custom content (virnucpro_summary_mqc.tsv) for an existing MultiQC report.
    def embedReports = dnaReports.map { meta, shard, json -> [meta, 'dna', json] }
        .mix(proteinReports.map { meta, shard, json -> [meta, 'protein', json] })
        .map { meta, side, json -> [groupKey(meta.id, 2 * meta.shards), readReport(json)] }
        .groupTuple(remainder: true)
        .map { id, reports -> [id.toString(), reports] }
    def versions = channel.topic('versions').map { yml -> yml.text }.unique()
        .map { text -> (text =~ /virnucpro: *(\S+)/).findAll().collect { m -> m[1] } }
        .flatten().unique().toSortedList().map { all -> all.join(',') }
    def rows = TRANSLATE.out.report.map { meta, json -> [meta.id, readReport(json)] }
        .join(embedReports, failOnMismatch: true, failOnDuplicate: true)
        .join(PREDICT.out.report.map { meta, json -> [meta.id, readReport(json)] }, failOnMismatch: true, failOnDuplicate: true)
        .combine(versions)
        .map { id, translate, embeds, predict, binary -> summaryRow(id, translate, embeds, predict, binary) }
    rows.subscribe { row ->
        if (row.failed_records > 0) {
            log.warn "Sample ${row.sample}: ${row.failed_records} ORF(s) could not be embedded and were left out of its prediction (${params.outdir}/pipeline_info/failed_records.tsv)"
        }
    }
    rows.toSortedList { a, b -> a.sample <=> b.sample }
        .flatMap { all -> [['virnucpro_summary.tsv', summaryTable(all, false)], ['virnucpro_summary_mqc.tsv', summaryTable(all, true)]] }
        .collectFile(storeDir: "${params.outdir}/pipeline_info") { name, text -> [name, text] }
    rows.map { row -> row.failed_records }.sum()
        .subscribe { failed ->
            if (failed > 0) {
                log.warn "${failed} ORF(s) in all could not be embedded: see ${params.outdir}/pipeline_info/failed_records.tsv"
            }
        }

    // Every sample ends in PREDICT: one whose TRANSLATE was skipped (errorStrategy 'ignore')
    // would otherwise be missing from the results without a word.
    samples.map { meta, fasta -> meta.id }.toList()
        .concat(PREDICT.out.report.map { meta, report -> meta.id }.toList())
        .toList()
        .subscribe { lists ->
            def missing = lists[0] - lists[1]
            if (missing) {
                error "No results for sample(s) ${missing.sort().join(', ')}: a task of theirs failed or was skipped (see the execution trace)"
            }
        }

    // Every module's versions.yml goes to the `versions` topic (nf-core's way): one file.
    channel.topic('versions')
        .unique { yml -> yml.text }
        .collectFile(name: 'versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true)
}

// ---------------------------------------------------------------------------------------------
// Parameters as numbers and switches. On the command line under the strict syntax (the default
// from Nextflow 26.04) a parameter arrives as a string: `--chunk_size 500` is '500', for which
// `in [300, 500]` is false, and `--save_embeddings false` is 'false', which Groovy takes as
// true. nf-schema casts such values for its validation only, not in `params`, so every
// comparison and test of a number or switch in this file reads it through these two.

def intParam(String name) {
    def v = params[name]
    if (v == null || v instanceof Integer) {
        return v
    }
    def s = v.toString().trim()
    if (!(s ==~ /-?[0-9]{1,9}/)) {
        error "--${name} ${v}: expected a whole number"
    }
    return s.toInteger()
}

def boolParam(String name) {
    def v = params[name]
    if (v == null) {
        return false
    }
    if (v instanceof Boolean) {
        return v
    }
    def s = v.toString().trim().toLowerCase()
    if (!(s in ['true', 'false'])) {
        error "--${name} ${v}: expected true or false"
    }
    return s == 'true'
}

// Settings that a run would otherwise trip over late, or silently.
def checkParams() {
    if (params.publish_dir_mode == 'move') {
        error "--publish_dir_mode move is not supported: the steps read published files again (translate.json, the embeddings) and -resume needs the work files; use copy, link or symlink"
    }
    ['checkpoint_dir', 'gpu_lock_dir', 'kernel_cache'].each { name ->
        if (params[name] && !params[name].toString().startsWith('/')) {
            error "--${name} ${params[name]}: give an absolute path (it is created on the host and mounted at the same path into containers)"
        }
    }
    if (params.device && params.device.toString().startsWith('cuda') && !boolParam('use_gpu')) {
        error "--device ${params.device} needs GPUs: add -profile gpu (or local_gpu on one node without a scheduler)"
    }
    // GPUs per executor (README.md, "GPUs per executor"): each embedding task must see the one
    // GPU it was given and no other. Docker under SLURM cannot: SLURM gives the job a GPU
    // through the job's cgroup and a job-relative CUDA_VISIBLE_DEVICES (0 for every job when
    // ConstrainDevices is on), but `docker run --gpus all` is started by the Docker daemon,
    // outside that cgroup: every task's container sees all of the node's GPUs and index 0 is
    // the same GPU for all of them. Apptainer/Singularity run inside the job and see its GPU.
    def profiles = workflow.profile.tokenize(',')
    if (boolParam('use_gpu') && 'slurm' in profiles && workflow.containerEngine == 'docker') {
        error "-profile gpu,slurm,docker: Docker containers are started outside the SLURM job's cgroup, so each task would see every GPU of the node and CUDA_VISIBLE_DEVICES (job-relative) would point several tasks at the same one. Use -profile gpu,slurm,apptainer (or singularity) with --container_sif, or virnucpro on the PATH without a container profile"
    }
    // The local executor assigns GPUs only from Nextflow 26.10, and only when
    // CUDA_VISIBLE_DEVICES lists the GPUs at launch; before, or without it, `accelerator` is
    // ignored and every task would use every GPU. The GPU lease (local_gpu) needs neither.
    if (boolParam('use_gpu') && !boolParam('gpu_lease') && profiles.intersect(['slurm']).isEmpty() && System.getenv('CUDA_VISIBLE_DEVICES') != null && !nextflow.version.matches('>=26.10.0')) {
        error "-profile gpu with CUDA_VISIBLE_DEVICES=${System.getenv('CUDA_VISIBLE_DEVICES')} and Nextflow ${nextflow.version}: the local executor assigns GPUs to tasks only from Nextflow 26.10, so every task would use every GPU. Use -profile local_gpu (each task leases one free GPU of the node), or Nextflow >= 26.10"
    }
    // A bare name (virnucpro:0.1.0) is a local Docker image; Apptainer/Singularity would pull
    // it as docker://virnucpro:0.1.0 from Docker Hub, where it does not exist.
    if (workflow.containerEngine in ['singularity', 'apptainer'] && !params.container_sif && !params.container.contains('/')) {
        error "-profile ${workflow.containerEngine}: --container ${params.container} is a local image name, which ${workflow.containerEngine} would pull from Docker Hub (it is not there). Build a .sif from containers/virnucpro.def and pass --container_sif /path/virnucpro.sif, or push the image to your registry and pass --container registry/owner/virnucpro:TAG"
    }
}

// The published classifier for --chunk_size when --classifier is not given.
def defaultClassifier() {
    if (!(intParam('chunk_size') in [300, 500])) {
        error "--chunk_size ${params.chunk_size}: the published classifiers are for 300 and 500; give --classifier"
    }
    return intParam('chunk_size').toString()
}

// A Hub id (org/name[@revision]) or a classifier to download (500, 300, http(s) URL), rather
// than a local path. An existing path of that name wins, as in `virnucpro`.
def isRemote(String kind, String given) {
    if (given.contains('://') && !(given.startsWith('http://') || given.startsWith('https://'))) {
        return false // s3://, gs://: a path Nextflow stages
    }
    if (!given.contains('://') && file(given).exists()) {
        return false
    }
    if (kind == 'classifier') {
        return given in ['500', '300'] || given.startsWith('http://') || given.startsWith('https://')
    }
    return given ==~ /[A-Za-z0-9][A-Za-z0-9_.-]*\/[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_.\/-]+)?/
}

// Where `virnucpro models fetch` leaves a model, relative to HF_HOME (its cache layout):
// hub/models--org--name, or virnucpro/classifiers/<500|300|url-<sha256 of the URL, 16 hex>>.
def storePath(String kind, String given) {
    if (kind == 'classifier') {
        def url = given.split('#')[0]
        def sha = java.security.MessageDigest.getInstance('SHA-256').digest(url.getBytes('UTF-8')).encodeHex().toString()
        def key = given in ['500', '300'] ? given : "url-${sha.take(16)}"
        return "virnucpro/classifiers/${key}".toString()
    }
    return "hub/models--${given.split('@')[0].replace('/', '--')}".toString()
}

// The folder of the model store (--model_store) that FETCH_MODELS uses as HF_HOME for one
// model: one per revision, so that org/x@v2 never finds org/x@v1's download and skips its own
// fetch (storeDir skips a task whose output exists). `main` when no revision is given; a
// revision with characters unfit for a folder name gets a hash of it. Classifiers are keyed by
// what they are (500, 300, the URL's hash) in storePath already.
def storeHome(String kind, String given) {
    if (kind == 'classifier') {
        return 'classifiers'
    }
    def rev = given.contains('@') ? given.split('@', 2)[1] : 'main'
    def safe = rev.replaceAll(/[^A-Za-z0-9._-]/, '_')
    if (safe != rev || safe.startsWith('.')) {
        safe = "${safe}-${rev.md5().take(8)}"
    }
    return "revisions/${safe}".toString()
}

// The classifier's file name in its folder: the published name, or the URL's last segment.
def classifierFile(String given) {
    if (given in ['500', '300']) {
        return "${given}_model.pth".toString()
    }
    def name = given.split('#')[0].tokenize('/').last()
    return name ==~ /[A-Za-z0-9_-][A-Za-z0-9_.-]*/ ? name : 'classifier.pth'
}

// A model folder (hub/models--org--name) to its snapshot for the id's revision.
def snapshotOf(repoDir, String given, String where) {
    def rev = given.contains('@') ? given.split('@', 2)[1] : 'main'
    def commit = rev ==~ /[0-9a-f]{40}/ ? rev : null
    if (!commit) {
        def ref = repoDir.resolve("refs/${rev}")
        if (!ref.exists()) {
            error "Model ${given}: not in ${where} (no ${ref}); fetch it there with `HF_HOME=... virnucpro models fetch` on a machine with internet (a login node), see README.md"
        }
        commit = ref.text.trim()
    }
    def snap = repoDir.resolve("snapshots/${commit}")
    if (!snap.resolve('config.json').exists()) {
        error "Model ${given}: ${snap} is incomplete; run `virnucpro models fetch` again with the same HF_HOME"
    }
    return snap
}

// A model as the tasks take it: a value channel of modelInput() for DNABERT-S/ESM-2, of the
// file for the classifier; from a local path, --hf_home, or the FETCH_MODELS store.
def modelChannel(String kind, String given, fetched) {
    def from = { dir, where ->
        kind == 'classifier' ? checkedFile(dir.resolve(classifierFile(given)), given, where) : modelInput(snapshotOf(dir, given, where).toString())
    }
    if (!isRemote(kind, given)) {
        return channel.value(kind == 'classifier' ? file(given, checkIfExists: true) : modelInput(given))
    }
    if (params.hf_home) {
        def home = file(params.hf_home, checkIfExists: true)
        return channel.value(from(home.resolve(storePath(kind, given)), "--hf_home ${params.hf_home}"))
    }
    return fetched.filter { k, id, dir -> k == kind }.map { k, id, dir -> from(dir, 'the model store') }.first()
}

def checkedFile(f, String given, String where) {
    if (!f.exists()) {
        error "Classifier ${given}: not in ${where} (no ${f}); fetch it with `virnucpro models fetch --classifier ${given}` on a machine with internet, see README.md"
    }
    return f
}

// An embedding model as [path to stage, sub-path of the model inside it, signature].
//
// Staging: a Hugging Face cache snapshot (models--org--name/snapshots/<rev>/) holds links into
// ../../blobs, and a container only sees the staged path's own directory: the repository
// directory (models--org--name) is staged instead and the task reads snapshots/<rev> inside it.
//
// Signature: -resume hashes a directory input by its own path, size and mtime, so replacing
// model.safetensors inside it would reuse embeddings made with the old weights. The signature
// (names, sizes and mtimes of the files, links followed) is a `val` input of the task: new
// weights, new hash, new embeddings.
def modelInput(String given) {
    def model = file(given, checkIfExists: true)
    def real = model.toUri().scheme == 'file' ? model.toRealPath() : model
    def repo = real.parent?.parent
    def hubSnapshot = real.parent?.name == 'snapshots' && repo?.resolve('blobs')?.isDirectory()
    def staged = hubSnapshot ? repo : model
    def sub = hubSnapshot ? "snapshots/${real.name}".toString() : ''
    return [staged, sub, modelSignature(model)]
}

def modelSignature(model) {
    def lines = []
    listModelFiles(model, '', lines, 0)
    return lines.sort().join('\n').md5()
}

// name<TAB>size<TAB>mtime of every file under `path` (links followed; 16 levels at most, so a
// link loop cannot recurse for ever).
def listModelFiles(path, String rel, List lines, int depth) {
    if (path.isDirectory()) {
        if (depth >= 16) {
            error "Model ${path}: directories nested more than 16 deep (a link loop?)"
        }
        path.listFiles().each { f -> listModelFiles(f, rel ? "${rel}/${f.name}".toString() : f.name, lines, depth + 1) }
    } else {
        lines.add("${rel}\t${path.size()}\t${path.lastModified()}".toString())
    }
}

// [[id: sample], fasta] per sample, from a samplesheet CSV (columns and ids checked by
// nf-schema against assets/schema_input.json; relative FASTA paths are relative to the
// samplesheet) or from a FASTA path/glob (id = file name up to the first dot).
def samplesFrom(String input) {
    if (!input.toLowerCase().endsWith('.csv')) {
        return channel.fromPath(input, checkIfExists: true)
            .map { fasta -> [[id: fasta.simpleName], fasta] }
            .toList()
            .flatMap { samples -> checkSamples(samples, input) }
    }
    def sheet = file(input, checkIfExists: true)
    def rows = samplesheetToList(sheet, "${projectDir}/assets/schema_input.json")
    return channel.fromList(checkSamples(rows.collect { meta, fasta -> [meta, sampleFasta(meta, fasta, sheet)] }, input))
}

def sampleFasta(Map meta, String given, sheet) {
    // Absolute paths and URLs (s3://, https://, ...) as they are; others beside the samplesheet.
    def absolute = given.startsWith('/') || given.contains('://')
    def fasta = absolute ? file(given) : sheet.parent.resolve(given)
    if (!fasta.exists()) {
        error "Samplesheet ${sheet}: sample '${meta.id}': FASTA ${fasta} does not exist"
    }
    return fasta
}

// Sample ids name output directories (<outdir>/<id>/) and embedding files: unique, path-safe,
// and none of the names that would publish outside --outdir ('.', '..') or over the run's
// reports ('pipeline_info'). The same rule as assets/schema_input.json's, for globs too.
def checkSamples(List samples, String input) {
    if (!samples) {
        error "No samples in ${input}"
    }
    def ids = samples.collect { sample -> sample[0].id.toString() }
    def bad = ids.findAll { id -> !(id ==~ /[A-Za-z0-9_.-]+/) }
    if (bad) {
        error "${input}: sample ids may only contain letters, digits, '.', '_' and '-': ${bad.join(', ')}"
    }
    def reserved = ids.findAll { id -> id in reservedSampleIds() }
    if (reserved) {
        error "${input}: sample id(s) ${reserved.join(', ')} not allowed: a sample's results go to <outdir>/<sample>/, so '.' and '..' would publish into or above --outdir and 'pipeline_info' over the run's reports; rename the sample (or the FASTA file)"
    }
    def dup = ids.findAll { id -> ids.count(id) > 1 }.unique()
    if (dup) {
        error "${input}: duplicate sample ids ${dup.join(', ')}"
    }
    return samples
}

def reservedSampleIds() {
    return ['.', '..', 'pipeline_info']
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

// Embedding tasks from every shard ([meta, key, nucleotide, protein]): in a fixed order
// (sample id, then shard key), shards are added to a group while its size stays within
// `target` tokens; a shard as large as the target or larger is a group of its own, and so is
// every shard when the target is 0. A shard's size is its protein FASTA's size in bytes: one
// byte per residue, one ESM-2 token per residue, plus the headers, so a group holds at most
// `target` ESM-2 tokens (DNABERT-S makes fewer tokens of the same ORFs). Each group is
// [[id: embed_<n>_of_<total>, members: the shards' metas with their `shard` key, in order],
// nucleotide files, protein files].
def embedGroups(List shards, Integer target) {
    def sorted = shards.toSorted { a, b -> a[0].id <=> b[0].id ?: a[1] <=> b[1] }
    def groups = []
    def size = 0L
    sorted.each { item ->
        def weight = item[3].size()
        if (!groups || target <= 0 || size + weight > target) {
            groups << []
            size = 0L
        }
        groups[-1] << item
        size += weight
    }
    return groups.withIndex().collect { members, i ->
        def meta = [id: "embed_${i + 1}_of_${groups.size()}".toString(), members: members.collect { m, key, nucleotide, protein -> m + [shard: key] }]
        [meta, members.collect { item -> item[2] }, members.collect { item -> item[3] }]
    }
}

// An embedding task's files of one kind (`suffix`) split back by shard: [sample meta, shard key,
// file] for each member of the group, found by the name the module gives it
// (<sample>.<shard><suffix>). A missing file fails the run when `required` (the failed lists
// exist only for shards with failures); a file of no member would be a module bug.
def memberFiles(String process, Map group, files, String suffix, boolean required) {
    def byName = (files instanceof List ? files : [files]).collectEntries { f -> [(f.name): f] }
    def found = group.members.findResults { m ->
        def name = "${m.id}.${m.shard}${suffix}".toString()
        if (!byName.containsKey(name)) {
            if (required) {
                error "${process} (${group.id}): no ${name} among its outputs ${byName.keySet().sort()}"
            }
            return null
        }
        [m.findAll { k, v -> k != 'shard' }, m.shard, byName.remove(name)]
    }
    if (byName) {
        error "${process} (${group.id}): outputs ${byName.keySet().sort()} belong to none of its shards"
    }
    return found
}

// ---------------------------------------------------------------------------------------------
// The run's summary, in the binary's own terms: translate.json (records, chunks, orfs, shards),
// the embedding reports (failed: records left out, listed in <output>.failed.tsv) and
// predict.json (sequences, chunks, sequences_virus, chunks_virus, the models' names).

def readReport(json) {
    return new groovy.json.JsonSlurper().parseText(json.text)
}

// A sample's row of the summary table.
def summaryRow(String id, Map translate, List embeds, Map predict, String binary) {
    return [
        sample          : id,
        sequences       : translate.records,
        sequences_scored: predict.sequences,
        viral_sequences : predict.sequences_virus,
        chunks          : translate.chunks,
        chunks_scored   : predict.chunks,
        viral_chunks    : predict.chunks_virus,
        orfs            : translate.orfs,
        shards          : translate.shards,
        failed_records  : embeds.collect { e -> e.failed as Long }.sum(0),
        dna_model       : predict.dna_model,
        protein_model   : predict.protein_model,
        classifier      : "${predict.classifier} (sha256 ${predict.classifier_sha256.take(12)})".toString(),
        virnucpro       : binary,
    ]
}

// The rows as TSV; for MultiQC (custom content, `_mqc.tsv`) headed by its YAML comments, so
// that the file drops into an existing MultiQC run as one table section.
def summaryTable(List rows, boolean multiqc) {
    def header = multiqc ? [
        "# id: 'virnucpro_summary'",
        "# section_name: 'VirNucPro'",
        "# description: 'Per sample: input sequences, chunks and ORFs (virnucpro translate), records the embedding steps could not embed, and the sequences and chunks called viral (virnucpro predict).'",
        "# format: 'tsv'",
        "# plot_type: 'table'",
        "# pconfig:",
        "#     id: 'virnucpro_summary_table'",
        "#     title: 'VirNucPro summary'",
        "#     namespace: 'VirNucPro'",
    ] : []
    def columns = rows ? rows[0].keySet().toList() : []
    def lines = header + [columns.join('\t')] + rows.collect { row -> columns.collect { c -> row[c].toString().replace('\t', ' ') }.join('\t') }
    return lines.join('\n') + '\n'
}

// An embedding step's <output>.failed.tsv (id, step, reason) with the sample and shard first.
def failedRows(String id, String shard, String tsv) {
    def lines = tsv.readLines().findAll { line -> line }
    return (["sample\tshard\t${lines[0]}"] + lines.drop(1).collect { line -> "${id}\t${shard}\t${line}" }).join('\n') + '\n'
}
