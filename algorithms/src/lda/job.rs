//! From a job spec to an [`Lda`]: checks and corpus loading shared with
//! MedLDA.

use super::{split_holdout, Lda, LdaParams};
use crate::data::bow::{self, Corpus};
use crate::registry::BuildError;
use petuum_core::spec::{parse_params, DataFormat, DataSpec, JobSpec, SpecError};

/// Checks that the data is a bag-of-words corpus.
pub fn check_bow_format(spec: &JobSpec) -> Result<(), SpecError> {
    match spec.data.format {
        DataFormat::UciBow | DataFormat::Ldac => Ok(()),
        other => Err(SpecError::invalid(
            "data.format",
            format!(
                "{} reads uci_bow or ldac corpora, not `{other:?}`",
                spec.algorithm
            )
            .to_lowercase(),
        )),
    }
}

/// Validates an `lda` spec without reading data.
pub fn validate(spec: &JobSpec) -> Result<(), SpecError> {
    let p: LdaParams = parse_params(&spec.params)?;
    p.validate()?;
    check_bow_format(spec)
}

/// Reads one corpus file of the spec's format.
pub fn read_corpus(d: &DataSpec, path: &std::path::Path) -> Result<Corpus, BuildError> {
    Ok(match d.format {
        DataFormat::UciBow => bow::read_uci(path, d.vocab.as_deref())?,
        DataFormat::Ldac => bow::read_ldac(path, d.vocab.as_deref())?,
        other => {
            return Err(SpecError::invalid(
                "data.format",
                format!("`{other:?}` is not a bag-of-words format").to_lowercase(),
            )
            .into())
        }
    })
}

/// A job's corpora.
pub struct Loaded {
    pub train: Corpus,
    /// `data.test`, or the held-out part of a `data.test_fraction` split.
    pub test: Option<Corpus>,
    /// Indices into `data.train` of the training documents (all of them
    /// when there is no split) and of the held-out ones.
    pub train_idx: Vec<usize>,
    pub test_idx: Vec<usize>,
}

/// The training corpus and the held-out one (`data.test`, or the seeded
/// `data.test_fraction` split of `data.train`).
pub fn load(spec: &JobSpec) -> Result<Loaded, BuildError> {
    let d = &spec.data;
    let all = read_corpus(d, &d.train)?;
    if let Some(t) = &d.test {
        let mut test = read_corpus(d, t)?;
        if test.num_words > all.num_words {
            return Err(SpecError::invalid(
                "data.test",
                format!(
                    "has {} words, the training corpus {}",
                    test.num_words, all.num_words
                ),
            )
            .into());
        }
        test.num_words = all.num_words;
        let n = all.len();
        return Ok(Loaded {
            train: all,
            test: Some(test),
            train_idx: (0..n).collect(),
            test_idx: Vec::new(),
        });
    }
    if let Some(f) = d.test_fraction {
        let (train, test) = split_holdout(all.len(), f, spec.run.seed);
        return Ok(Loaded {
            train: all.subset(&train),
            test: Some(all.subset(&test)),
            train_idx: train,
            test_idx: test,
        });
    }
    let n = all.len();
    Ok(Loaded {
        train: all,
        test: None,
        train_idx: (0..n).collect(),
        test_idx: Vec::new(),
    })
}

/// Validates the spec, reads the corpus and builds the algorithm.
pub fn build(spec: &JobSpec) -> Result<Lda, BuildError> {
    validate(spec)?;
    let params: LdaParams = parse_params(&spec.params)?;
    let data = load(spec)?;
    check_size(&data.train, params.num_topics)?;
    Lda::new(params, data.train, data.test, spec.run.seed)
        .map(|l| l.with_clocks(spec.clocks()))
        .map_err(|e| SpecError::invalid("data.train", e.to_string()).into())
}

/// Refuses a word-topic model too large for the node (a corpus header's
/// vocabulary sets it).
pub fn check_size(train: &Corpus, topics: u32) -> Result<(), SpecError> {
    // The word-topic and document-topic counts, and each token's word and
    // topic (a count field may declare billions of tokens in one line).
    let (w, d, k) = (train.num_words as u128, train.len() as u128, topics as u128);
    let tokens: u128 = train.docs.iter().flatten().map(|&(_, c)| c as u128).sum();
    crate::limits::check_model(
        "params.num_topics",
        &format!("{w} words and {d} documents x {k} topics, {tokens} tokens"),
        (w + d) * k + tokens,
    )
}

/// Reads held-out documents for evaluation: LDA-C when the file name ends
/// in `.ldac`, else UCI bag of words. Checks the ids against a model's
/// vocabulary size.
pub fn read_eval_corpus(
    path: &std::path::Path,
    num_words: usize,
) -> Result<Corpus, crate::data::DataError> {
    let ldac = path.extension().is_some_and(|e| e == "ldac");
    let mut c = if ldac {
        bow::read_ldac(path, None)?
    } else {
        bow::read_uci(path, None)?
    };
    if c.num_words as usize > num_words {
        return Err(crate::data::DataError::invalid(
            path,
            format!(
                "documents use {} word ids, the model knows {num_words}",
                c.num_words
            ),
        ));
    }
    c.num_words = num_words as u32;
    Ok(c)
}
