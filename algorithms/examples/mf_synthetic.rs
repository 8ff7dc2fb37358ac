//! Writes the seeded synthetic low-rank ratings matrix of
//! `petuum_algorithms::mf::synthetic` as CSV (`user,item,rating`).
//!
//! `cargo run --release -p petuum-algorithms --example mf_synthetic -- OUT.csv users items rank density sigma seed`

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> f64 { a[i].parse().expect("a number") };
    let text = petuum_algorithms::mf::synthetic(
        num(1) as usize,
        num(2) as usize,
        num(3) as usize,
        num(4),
        num(5),
        num(6) as u64,
    );
    let mut csv = String::from("user,item,rating\n");
    for line in text.lines() {
        csv.push_str(&line.replace(' ', ","));
        csv.push('\n');
    }
    std::fs::write(&a[0], csv).expect("write the CSV");
}
