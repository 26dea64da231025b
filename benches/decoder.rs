//! The decoder's forward pass: `cargo bench --bench decoder`.
//!
//! For tiny.en and base (the catalog's, fetched on first use), 2 threads: the median time of a
//! pass of one token a row after 40 tokens, for 1 row (a window decoded greedily) and 8 rows (a
//! batch of windows, `--batch-size 8`), with the weights in float32, bfloat16 and int8
//! (`--decoder-precision`), each against float32 in the same run. The features are a real
//! window's (jfk, through the `cpu` encoder). `AMANUENSIS_BENCH_MODELS` restricts the models.

use std::time::Instant;

use amanuensis::audio::{AudioStream, Input, LogMel, MelSpool, N_FRAMES};
use amanuensis::model::{
    DecoderFiles, DecoderHints, DecoderModel, Encoder, EncoderOptions, WeightPrecision,
    resolve_model,
};

const THREADS: usize = 2;
const ROUNDS: usize = 15;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let models = std::env::var("AMANUENSIS_BENCH_MODELS").unwrap_or_else(|_| "tiny.en,base".into());
    let jfk = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/reference/audio/jfk.flac");
    println!(
        "decoder pass, one token a row after 40, {THREADS} threads, median of {ROUNDS} passes \
         (ms), ratio to float32 weights in this run"
    );
    println!(
        "{:<8} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "model", "rows", "f32 ms", "bf16 ms", "int8 ms", "bf16/f32", "int8/f32"
    );
    for name in models.split(',') {
        let dir = resolve_model(name, &mut |line| eprintln!("{line}"))
            .unwrap_or_else(|e| panic!("cannot obtain {name}: {e:#}"));
        let options = EncoderOptions {
            threads: THREADS,
            ..EncoderOptions::default()
        };
        let encoder = Encoder::load(&dir, &options).unwrap();
        let dims = *encoder.dims();
        let mut stream = AudioStream::open(&Input::Path(jfk.clone())).unwrap();
        let mut spool =
            MelSpool::build(&mut stream, &LogMel::new(dims.n_mels), &mut |_| {}).unwrap();
        let mut window = vec![0.0f32; dims.n_mels * N_FRAMES];
        spool
            .window(0, spool.content_frames().min(N_FRAMES), &mut window)
            .unwrap();
        let features = encoder.encode(&window).unwrap();
        let hints = DecoderHints {
            d_model: dims.d_model,
            n_audio_ctx: dims.n_audio_ctx,
            n_heads: None,
        };
        let mut times = Vec::new();
        for precision in [
            WeightPrecision::F32,
            WeightPrecision::Bf16,
            WeightPrecision::Int8,
        ] {
            let files = DecoderFiles::locate(&dir).unwrap();
            let decoder = DecoderModel::load_with(files, hints, THREADS, precision).unwrap();
            let mut per_rows = Vec::new();
            for rows in [1usize, 8] {
                let refs: Vec<&[f32]> = vec![features.as_slice(); rows];
                let mut session = decoder.batch_session(&refs).unwrap();
                session.forward(&vec![vec![1000u32; 40]; rows]).unwrap();
                let mut passes = Vec::new();
                for i in 0..ROUNDS + 3 {
                    let t = Instant::now();
                    session.forward(&vec![vec![1000 + i as u32]; rows]).unwrap();
                    if i >= 3 {
                        passes.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
                per_rows.push(median(passes));
            }
            times.push(per_rows);
        }
        for (r, rows) in [1, 8].iter().enumerate() {
            let (f, b, q) = (times[0][r], times[1][r], times[2][r]);
            println!(
                "{name:<8} {rows:>5} {f:>9.2} {b:>9.2} {q:>9.2} {:>8.2}x {:>8.2}x",
                b / f,
                q / f
            );
        }
    }
}
