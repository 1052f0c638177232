//! `ballast push NS/MODEL DIR`: hash every file locally, create a draft version, send only the
//! bytes the registry does not hold yet (in parallel), seal with the digest computed here so the
//! registry can only seal exactly what was pushed, then set the alias and stage if asked.

use std::num::NonZeroUsize;

use anyhow::{anyhow, bail, Context as _};
use ballast_api::{AttachFile, CreateVersion, FileEntry, SealVersion, SetStage};
use ballast_client::{Client, UploadOptions};
use ballast_core::{validate_alias, ModelName, Stage};
use futures_util::{stream, StreamExt as _, TryStreamExt as _};
use serde::Serialize;

use super::Ctx;
use crate::cli::PushArgs;
use crate::metadata;
use crate::output::{self, Interrupted};
use crate::progress::Progress;
use crate::tree::{self, HashedFile, LocalFile};

/// How a file reached the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    /// Its bytes were sent.
    Uploaded,
    /// The registry already held them; the blob was attached.
    Reused,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct PushReport {
    model: String,
    version: u64,
    digest: String,
    files: usize,
    total_size: u64,
    uploaded: usize,
    reused: usize,
    bytes_uploaded: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    alias: Option<String>,
    stage: String,
    /// The transition request waiting for approvals, when the policy asks for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_transition_request: Option<u64>,
}

/// Runs `ballast push`.
///
/// # Errors
/// A local problem (unreadable file, link escaping the directory, bad metadata), or what the
/// registry answers — naming the file at fault.
pub async fn run(ctx: &Ctx, args: PushArgs) -> anyhow::Result<()> {
    // Everything that can be checked locally is checked before the registry is touched.
    let metadata = args
        .meta
        .as_deref()
        .map(metadata::load)
        .transpose()?
        .unwrap_or_default();
    if let Some(alias) = &args.alias {
        validate_alias(alias).map_err(|e| anyhow!("--alias: {}", e.message))?;
    }
    if let Some(stage) = args.stage {
        if stage != Stage::Development && !Stage::Development.can_move_to(stage) {
            bail!(
                "--stage {stage}: a new version starts in development and can only move to staging or archived; \
                 promote it later with `ballast version stage {}/N {stage}`",
                args.name
            );
        }
    }
    let dir = args.dir.clone();
    let files = tokio::task::spawn_blocking(move || tree::walk(&dir)).await??;
    if files.is_empty() {
        bail!("{} contains no files: nothing to push", args.dir.display());
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::new("hashing", total);
    let result = push(ctx, &args, metadata, files, total, &progress).await;
    progress.finish();
    let report = result?;
    if ctx.json {
        output::json(&report)?;
    } else {
        outln!("pushed {} version {}", report.model, report.version);
        outln!("digest: {}", report.digest);
        outln!(
            "{} files, {} ({} uploaded, {} already in the registry)",
            report.files,
            output::size(report.total_size),
            report.uploaded,
            report.reused
        );
        if let Some(a) = &report.alias {
            outln!("alias: {}@{a} → {}", report.model, report.version);
        }
        if args.stage.is_some() {
            outln!("stage: {}", report.stage);
        }
    }
    Ok(())
}

async fn push(
    ctx: &Ctx,
    args: &PushArgs,
    metadata: ballast_api::VersionMetadata,
    files: Vec<LocalFile>,
    total: u64,
    progress: &Progress,
) -> anyhow::Result<PushReport> {
    let hashed = hash_all(files, args.parallel, progress).await?;

    let body = CreateVersion {
        metadata,
        tags: args.tags.iter().cloned().collect(),
    };
    let version = ctx
        .client
        .create_version(&args.name, &body)
        .await
        .with_context(|| format!("creating a version of {}", args.name))?;
    let number = version.version;
    progress.phase("uploading", total);

    let sent = tokio::select! {
        r = upload_all(&ctx.client, &args.name, number, &hashed, args.parallel, progress) => r,
        () = crate::signals::interrupted() => Err(Interrupted.into()),
    };
    let sent = match sent {
        Ok(s) => s,
        Err(e) => {
            progress.println(&format!(
                "note: {}/{number} was left as an unsealed draft; push again to create a complete version",
                args.name
            ));
            return Err(e);
        }
    };

    // The manifest the registry must seal: our paths, sizes and digests (each upload was
    // checked against them), with media types as the registry recorded them.
    let pushed: Vec<HashedFile> = sent
        .iter()
        .map(|(f, entry, _)| HashedFile {
            media_type: entry.media_type.clone(),
            ..f.clone()
        })
        .collect();
    let expected = tree::manifest(&pushed).digest();
    let sealed = ctx
        .client
        .seal(
            &args.name,
            number,
            &SealVersion {
                expected_digest: Some(expected.to_hex()),
            },
        )
        .await
        .with_context(|| format!("sealing {}/{number} (it stays a draft)", args.name))?;
    let sealed_digest = sealed.digest.clone().unwrap_or_default();
    if sealed_digest != expected.to_hex() {
        bail!(
            "the registry sealed {}/{number} with digest {sealed_digest:?}, but the files pushed have digest {expected}",
            args.name
        );
    }

    if let Some(alias) = &args.alias {
        ctx.client
            .set_alias(&args.name, alias, number, None)
            .await
            .with_context(|| format!("setting alias {alias} (the version is sealed)"))?;
    }
    let mut stage = sealed.stage;
    let mut pending_transition_request = None;
    if let Some(target) = args.stage.filter(|s| *s != sealed.stage) {
        let outcome = ctx
            .client
            .request_stage(
                &args.name,
                number,
                &SetStage {
                    stage: target,
                    comment: None,
                },
                None,
            )
            .await
            .with_context(|| {
                format!(
                    "moving {}/{number} to {target} (the version is sealed)",
                    args.name
                )
            })?;
        match outcome {
            ballast_client::StageOutcome::Moved(change) => stage = change.version.stage,
            ballast_client::StageOutcome::Pending(r) => {
                if !ctx.json {
                    outln!(
                        "the move to {target} waits for approval: transition request {} ({} of {} approvals); a reviewer runs `ballast transition approve {} {}`",
                        r.id,
                        r.approvals,
                        r.required_approvals,
                        r.model,
                        r.id
                    );
                }
                pending_transition_request = Some(r.id);
            }
        }
    }

    let uploaded = sent.iter().filter(|(_, _, t)| *t == Transfer::Uploaded).count();
    let bytes_uploaded = sent
        .iter()
        .filter(|(_, _, t)| *t == Transfer::Uploaded)
        .map(|(f, _, _)| f.size)
        .sum();
    Ok(PushReport {
        model: args.name.to_string(),
        version: number,
        digest: expected.to_hex(),
        files: sent.len(),
        total_size: sent.iter().map(|(f, _, _)| f.size).sum(),
        uploaded,
        reused: sent.len() - uploaded,
        bytes_uploaded,
        alias: args.alias.clone(),
        stage: stage.to_string(),
        pending_transition_request,
    })
}

/// Hashes every file, `parallel` at a time, on blocking threads.
async fn hash_all(
    files: Vec<LocalFile>,
    parallel: NonZeroUsize,
    progress: &Progress,
) -> anyhow::Result<Vec<HashedFile>> {
    let mut hashed: Vec<HashedFile> = stream::iter(files)
        .map(|f| {
            let progress = progress.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let (sha256, size) = tree::hash_file(&f.local, |n| progress.inc(n))?;
                    Ok::<_, anyhow::Error>(HashedFile {
                        path: f.path,
                        local: f.local,
                        size,
                        sha256,
                        media_type: None,
                    })
                })
                .await?
            }
        })
        .buffer_unordered(parallel.get())
        .try_collect()
        .await?;
    hashed.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(hashed)
}

/// Sends every file, `parallel` at a time; the first failure stops the rest.
async fn upload_all(
    client: &Client,
    name: &ModelName,
    number: u64,
    files: &[HashedFile],
    parallel: NonZeroUsize,
    progress: &Progress,
) -> anyhow::Result<Vec<(HashedFile, FileEntry, Transfer)>> {
    let mut sent: Vec<(HashedFile, FileEntry, Transfer)> = stream::iter(files.iter().cloned())
        .map(|f| async move {
            let (entry, how) = upload_one(client, name, number, &f, progress)
                .await
                .with_context(|| format!("uploading {} ({})", f.path, f.local.display()))?;
            if entry.path != f.path || entry.size != f.size || entry.sha256 != f.sha256.to_hex() {
                bail!(
                    "the registry recorded {} as {} bytes with SHA-256 {}, but the local file has {} bytes with SHA-256 {}",
                    f.path,
                    entry.size,
                    entry.sha256,
                    f.size,
                    f.sha256
                );
            }
            Ok((f, entry, how))
        })
        .buffer_unordered(parallel.get())
        .try_collect()
        .await?;
    sent.sort_by(|a, b| a.0.path.as_bytes().cmp(b.0.path.as_bytes()));
    Ok(sent)
}

/// Attaches the blob when the registry already holds it, uploads it otherwise.
async fn upload_one(
    client: &Client,
    name: &ModelName,
    number: u64,
    f: &HashedFile,
    progress: &Progress,
) -> anyhow::Result<(FileEntry, Transfer)> {
    let bar = progress.file(&f.path, f.size);
    if client.blob_exists(&f.sha256).await? {
        let attach = AttachFile {
            path: f.path.clone(),
            sha256: f.sha256.to_hex(),
            size: Some(f.size),
            media_type: None,
        };
        match client.attach_file(name, number, &attach).await {
            Ok(entry) => {
                bar.done(f.size);
                return Ok((entry, Transfer::Reused));
            }
            // Gone (or found corrupt) since we asked: send the bytes instead.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let opts = UploadOptions {
        sha256: Some(f.sha256),
        media_type: None,
        progress: Some(bar.callback()),
    };
    let entry = client.upload_path(name, number, &f.path, &f.local, &opts).await?;
    bar.done(f.size);
    Ok((entry, Transfer::Uploaded))
}
