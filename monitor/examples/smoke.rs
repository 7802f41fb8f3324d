use denali_abi::image::*;
fn main() {
    let msg = b"hello from a hand-made VM\n";
    let mut code = if std::env::var("UD").is_ok() {
        vec![0x0f, 0x0b]
    } else if std::env::var("BENCH").is_ok() {
        vec![
            0xb9, 0xa0, 0x86, 0x01, 0x00, 0xb8, 0x63, 0, 0, 0, 0xcd, 0x04, 0xff, 0xc9, 0x75, 0xf5,
        ]
    } else {
        vec![]
    };
    code.extend_from_slice(&[
        0x48,
        0x8d,
        0x3d,
        21,
        0,
        0,
        0,
        0xbe,
        msg.len() as u8,
        0,
        0,
        0,
        0xb8,
        1,
        0,
        0,
        0,
        0xcd,
        0x04,
        0xbf,
        7,
        0,
        0,
        0,
        0x31,
        0xc0,
        0xcd,
        0x04,
    ]);
    code.extend_from_slice(msg);
    let seg = SegmentSpec {
        vaddr: 0x100000,
        mem_size: code.len() as u64,
        flags: SEG_READ | SEG_EXEC,
        data: &code,
    };
    let img = build_image(0x100000, 4 << 20, 64 << 10, &[seg]);
    let n: u32 = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let bundle = denali_abi::boot::build_bundle(&[("smoke", n, &img)]);
    let cfg = denali_monitor::Config::new(
        std::path::Path::new(&std::env::args().nth(1).unwrap()),
        bundle,
    );
    let t = std::time::Instant::now();
    let r = denali_monitor::run(&cfg, Box::new(std::io::stdout()));
    println!(
        "result {:?} in {:?}",
        r.map_err(|e| e.to_string()),
        t.elapsed()
    );
}
