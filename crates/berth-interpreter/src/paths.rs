//! Where file tools may reach: the session's working directory and nothing above it.
//!
//! Paths are checked lexically here, on the host, before any reaches the sandbox; the tools then
//! run inside the sandbox, so a symbolic link the session made can lead only to what the
//! session's own code could read anyway.

use berth_guest::protocol::WORKSPACE_MOUNT;

/// A path inside the working directory, normalised: no `.`, `..` or empty segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspacePath {
    relative: String,
}

impl WorkspacePath {
    /// The working directory itself.
    pub fn root() -> Self {
        WorkspacePath {
            relative: String::new(),
        }
    }

    /// Accepts paths relative to the working directory, and absolute paths inside it.
    pub fn parse(path: &str) -> Result<Self, String> {
        if path.contains('\0') {
            return Err("a path may not contain NUL".into());
        }
        let relative = match path.strip_prefix(WORKSPACE_MOUNT) {
            Some("") => "",
            Some(rest) if rest.starts_with('/') => rest,
            _ if path.starts_with('/') => {
                return Err(format!(
                    "`{path}` is outside the session's working directory ({WORKSPACE_MOUNT}); use a relative path"
                ));
            }
            _ => path,
        };
        let mut segments: Vec<&str> = Vec::new();
        for segment in relative.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err(format!("`{path}` leads outside the session's working directory"));
                    }
                }
                segment => segments.push(segment),
            }
        }
        Ok(WorkspacePath {
            relative: segments.join("/"),
        })
    }

    pub fn is_root(&self) -> bool {
        self.relative.is_empty()
    }

    /// As the tools name it in results (`file://` URIs, listings).
    pub fn relative(&self) -> &str {
        &self.relative
    }

    /// Where it is inside the sandbox.
    pub fn absolute(&self) -> String {
        if self.relative.is_empty() {
            WORKSPACE_MOUNT.to_string()
        } else {
            format!("{WORKSPACE_MOUNT}/{}", self.relative)
        }
    }

    pub fn file_name(&self) -> &str {
        self.relative.rsplit('/').next().unwrap_or_default()
    }

    pub fn uri(&self) -> String {
        format!("file://{}", self.relative)
    }
}

/// The MIME type a file name suggests; `None` when its extension says nothing.
pub fn mime_type(name: &str) -> Option<&'static str> {
    let extension = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "txt" | "log" | "md" | "py" | "js" | "ts" | "sh" | "toml" | "ini" | "cfg" => "text/plain",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "parquet" => "application/vnd.apache.parquet",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_workspace_paths_normalise() {
        let cases = [
            ("data.csv", "data.csv"),
            ("./a//b/../c.txt", "a/c.txt"),
            ("/workspace/x/y", "x/y"),
            ("/workspace", ""),
            ("", ""),
            (".", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(
                WorkspacePath::parse(input).map(|p| p.relative).as_deref(),
                Ok(expected),
                "{input}"
            );
        }
        assert_eq!(
            WorkspacePath::parse("a/b").map(|p| p.absolute()),
            Ok("/workspace/a/b".into())
        );
    }

    #[test]
    fn paths_outside_the_workspace_are_refused() {
        for input in ["/etc/passwd", "../x", "a/../../x", "/workspacex/y", "/tmp", "a\0b"] {
            assert!(WorkspacePath::parse(input).is_err(), "{input}");
        }
    }

    #[test]
    fn mime_types_follow_extensions() {
        assert_eq!(mime_type("a.CSV"), Some("text/csv"));
        assert_eq!(mime_type("plot.png"), Some("image/png"));
        assert_eq!(mime_type("README"), None);
    }
}
