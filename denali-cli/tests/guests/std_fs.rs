//! std::fs over the VM's own disk, as a service on Linux would use it: the
//! first boot creates, writes, appends, seeks, lists, stats and removes
//! files and directories and checks each error's kind; the next boot finds
//! what the first left.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::time::{Duration, SystemTime};

/// A file of many clusters, in a pattern that shows any misplaced byte.
fn big_pattern() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn kind<T>(result: std::io::Result<T>) -> Option<ErrorKind> {
    result.err().map(|e| e.kind())
}

fn listing(dir: &str) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().into_string().unwrap();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn first_boot() -> std::io::Result<()> {
    // Create, write, read back.
    fs::write("/greeting.txt", "hello")?;
    println!("read {:?}", fs::read_to_string("/greeting.txt")?);

    // Append, from a second open.
    let mut log = OpenOptions::new().append(true).create(true).open("/service-log.txt")?;
    log.write_all(b"one\n")?;
    let mut again = OpenOptions::new().append(true).open("/service-log.txt")?;
    again.write_all(b"two\n")?;
    log.write_all(b"three\n")?;
    drop((log, again));
    println!("appended {:?}", fs::read_to_string("/service-log.txt")?);

    // Seek and overwrite in the middle; seek past the end and write.
    let mut file = OpenOptions::new().read(true).write(true).open("/greeting.txt")?;
    file.seek(SeekFrom::Start(1))?;
    file.write_all(b"ELL")?;
    file.seek(SeekFrom::End(3))?;
    file.write_all(b"!")?;
    let mut back = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut back)?;
    println!("after seeks {back:?}");
    println!("stream position {}", file.stream_position()?);

    // Many clusters, read back whole.
    let big = big_pattern();
    fs::write("/big.bin", &big)?;
    println!("big file read back equal: {}", fs::read("/big.bin")? == big);

    // Directories, listings, metadata.
    fs::create_dir("/data")?;
    fs::create_dir("/data/empty")?;
    fs::write("/data/a-long-file-name.json", "{}")?;
    fs::write("/data/b.txt", "bee")?;
    println!("listing {:?}", listing("/data")?);
    println!("empty listing {:?}", listing("/data/empty")?);
    let meta = fs::metadata("/data/b.txt")?;
    println!("metadata: file {} dir {} len {}", meta.is_file(), meta.is_dir(), meta.len());
    println!("dir metadata: dir {}", fs::metadata("/data")?.is_dir());
    let modified = meta.modified()?;
    let age = SystemTime::now().duration_since(modified).unwrap_or(Duration::ZERO);
    println!("modified within a minute of now: {}", age < Duration::from_secs(60));
    println!("relative path finds the same file: {}", fs::read_to_string("data/./b.txt")? == "bee");

    // Errors, with the kinds std gives on Linux.
    println!("missing: {:?}", kind(File::open("/nope.txt")));
    println!("create_new on an existing file: {:?}", kind(OpenOptions::new().write(true).create_new(true).open("/greeting.txt")));
    println!("create_dir twice: {:?}", kind(fs::create_dir("/data")));
    println!("missing parent: {:?}", kind(fs::write("/no/such/dir.txt", "x")));
    println!("remove_dir of a full directory fails: {}", fs::remove_dir("/data").is_err());
    println!("write to a read-only open fails: {}", File::open("/greeting.txt")?.write_all(b"x").is_err());

    // One file, however it is spelled: open under one name, it cannot be
    // removed under another (FAT would hand its clusters to the next file).
    let held = File::open("/data/A-LONG-FILE-NAME.JSON")?;
    let by_long = fs::remove_file("/data/a-long-file-name.json").is_err();
    let by_short = fs::remove_file("/DATA/a-long~1.jso").is_err();
    println!("open file kept under other names: {by_long} {by_short}");
    println!("its short name reads it: {:?}", fs::read_to_string("/data/A-LONG~1.JSO")?);
    drop(held);

    // Remove.
    fs::remove_file("/data/b.txt")?;
    println!("removed: {:?}", kind(fs::metadata("/data/b.txt")));
    fs::remove_dir("/data/empty")?;
    println!("listing after removals {:?}", listing("/data")?);
    Ok(())
}

fn later_boot() -> std::io::Result<()> {
    println!("kept {:?}", fs::read_to_string("/greeting.txt")?.as_bytes());
    println!("kept log {:?}", fs::read_to_string("/service-log.txt")?);
    println!("kept big file equal: {}", fs::read("/big.bin")? == big_pattern());
    println!("kept listing {:?}", listing("/")?);
    Ok(())
}

fn main() -> std::io::Result<()> {
    // A boot counter: the file survives the VM's reboots.
    let boots = match fs::read_to_string("/boots.txt") {
        Ok(text) => text.trim().parse::<u32>().unwrap() + 1,
        Err(e) if e.kind() == ErrorKind::NotFound => 1,
        Err(e) => return Err(e),
    };
    fs::write("/boots.txt", boots.to_string())?;
    println!("boot {boots}");
    if boots == 1 { first_boot() } else { later_boot() }
}
