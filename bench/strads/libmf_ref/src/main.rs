//! LIBMF (through the libmf crate) on a ratings CSV with petuum's hold-out
//! (every 5th rating in file order), ids remapped like petuum (sorted
//! numerically, from the training ratings; test ratings with unseen ids
//! skipped). Usage: libmf_ref FILE.csv user_col item_col rating_col rank threads iters lambda...
use std::collections::BTreeMap;
use std::time::Instant;
fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let text = std::fs::read_to_string(&a[0]).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap();
    let (cu, ci, cr) = (col(&a[1]), col(&a[2]), col(&a[3]));
    let rank: i32 = a[4].parse().unwrap();
    let threads: i32 = a[5].parse().unwrap();
    let iters: i32 = a[6].parse().unwrap();
    let mut all = Vec::new();
    for l in lines { if l.trim().is_empty() { continue; } let f: Vec<&str> = l.split(',').collect(); all.push((f[cu].parse::<f64>().unwrap(), f[ci].parse::<f64>().unwrap(), f[cr].parse::<f32>().unwrap())); }
    let (mut tr, mut te) = (Vec::new(), Vec::new());
    for (k, r) in all.iter().enumerate() { if ((k + 1) as f64 * 0.2).floor() > (k as f64 * 0.2).floor() { te.push(*r) } else { tr.push(*r) } }
    let ids = |v: &[(f64, f64, f32)], pick: fn(&(f64, f64, f32)) -> f64| { let mut s: Vec<f64> = v.iter().map(pick).collect(); s.sort_by(|a, b| a.total_cmp(b)); s.dedup(); s.iter().enumerate().map(|(k, x)| (x.to_bits(), k as i32)).collect::<BTreeMap<u64, i32>>() };
    let um = ids(&tr, |r| r.0); let im = ids(&tr, |r| r.1);
    let mut train = libmf::Matrix::new(); for r in &tr { train.push(um[&r.0.to_bits()], im[&r.1.to_bits()], r.2); }
    let mut test = libmf::Matrix::new(); let mut unseen = 0; for r in &te { match (um.get(&r.0.to_bits()), im.get(&r.1.to_bits())) { (Some(&u), Some(&i)) => test.push(u, i, r.2), _ => unseen += 1 } }
    for l in &a[7..] {
        let lambda: f32 = l.parse().unwrap();
        let t = Instant::now();
        let model = libmf::Model::params().factors(rank).threads(threads).iterations(iters).lambda_p2(lambda).lambda_q2(lambda).quiet(true).fit(&train).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!("{{\"lambda\": {lambda}, \"rank\": {rank}, \"iterations\": {iters}, \"threads\": {threads}, \"train_rmse\": {}, \"test_rmse\": {}, \"unseen\": {unseen}, \"seconds\": {s}}}", model.rmse(&train), model.rmse(&test));
    }
}
