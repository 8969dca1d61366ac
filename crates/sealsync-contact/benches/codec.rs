//! Codec throughput: vCard parse and write rates (cards/s, MB/s) on one core.
//!
//! Input: the file named by `SEALSYNC_BENCH_VCF` (`scripts/bench` makes 100k cards with
//! `scripts/gen_contacts.py`), else 100k cards of the same shape made here.

use std::time::{Duration, Instant};

use sealsync_contact::vcard::{VcardReader, VcardVersion, write_card};

fn generated(n: usize) -> Vec<u8> {
    let first = [
        "Anna",
        "Jürgen",
        "Zoë",
        "Taro",
        "Ana María",
        "Olivier",
        "Priya",
        "Chen",
        "Fatima",
        "Liam",
    ];
    let last = [
        "Müller",
        "Ångström",
        "Yamada",
        "O'Neil",
        "Dupont",
        "Sharma",
        "Wang",
        "Haddad",
        "Smith",
        "Kowalski",
    ];
    let mut out = String::new();
    for i in 0..n {
        let (f, l) = (first[i % 10], last[(i / 10) % 10]);
        out.push_str(&format!(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:gen-{i:07}\r\nFN:{f} {l} {i}\r\nN:{l};{f};;;\r\n\
             EMAIL;TYPE=INTERNET:{}.{i}@example.org\r\nTEL;TYPE=CELL:+1555{i:07}\r\n\
             ADR;TYPE=HOME:;;{i} Main St;Springfield;IL;62701;USA\r\nORG:Company {}\r\n\
             NOTE:Generated contact number {i} ✓\r\nEND:VCARD\r\n",
            f.to_lowercase().replace(' ', "."),
            i % 100
        ));
    }
    out.into_bytes()
}

fn best_of<F: FnMut() -> usize>(runs: usize, mut f: F) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut n = 0;
    for _ in 0..runs {
        let start = Instant::now();
        n = f();
        best = best.min(start.elapsed());
    }
    (best, n)
}

fn main() {
    let input = match std::env::var("SEALSYNC_BENCH_VCF") {
        Ok(path) => std::fs::read(&path).unwrap_or_else(|e| {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(1)
        }),
        Err(_) => generated(100_000),
    };
    let mb = input.len() as f64 / 1e6;
    let (parse, cards) = best_of(5, || {
        VcardReader::new(&input[..]).filter(Result::is_ok).count()
    });
    let contacts: Vec<_> = VcardReader::new(&input[..])
        .filter_map(Result::ok)
        .map(|c| c.contact)
        .collect();
    let mut out = String::with_capacity(input.len() * 2);
    let (write, _) = best_of(5, || {
        out.clear();
        for c in &contacts {
            write_card(&mut out, c, VcardVersion::V4);
        }
        contacts.len()
    });
    let out_mb = out.len() as f64 / 1e6;
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!("codec: {cards} cards, {mb:.1} MB in, best of 5, one thread");
    println!(
        "  parse vCard:    {:>9.0} cards/s  {:>6.1} MB/s   (target >= 300000 cards/s)",
        rate(cards, parse),
        mb / parse.as_secs_f64()
    );
    println!(
        "  write vCard 4:  {:>9.0} cards/s  {:>6.1} MB/s   (target >= 500000 cards/s)",
        rate(contacts.len(), write),
        out_mb / write.as_secs_f64()
    );
}
