//! Routing on the raw, still percent-encoded path.
//!
//! Several labels carry ARNs whose `:` and `/` arrive percent-encoded
//! (`/tags/arn%3Aaws%3A…%3Amemory%2Fm-AbCdEfGhIj`), so the path is split on literal `/` first
//! and each label is decoded only after the template matched. A trailing `/` is optional, as
//! the spec asks (`/runtimes/` and `/runtimes` reach the same operation).

use std::collections::HashMap;

use percent_encoding::percent_decode_str;

use crate::model::{Models, Operation, Plane};

#[derive(Debug)]
enum Segment {
    Literal(String),
    Label(String),
}

#[derive(Debug)]
struct Route {
    plane: Plane,
    operation: &'static Operation,
    segments: Vec<Segment>,
    literal_count: usize,
}

/// The operation a request reached, with its decoded path labels.
#[derive(Debug)]
pub struct RouteMatch {
    pub plane: Plane,
    pub operation: &'static Operation,
    pub labels: Vec<(String, String)>,
}

/// Why no operation matched.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no operation at this path")]
    NotFound,
    #[error("method not allowed at this path")]
    MethodNotAllowed,
    #[error("path label is not valid percent-encoded UTF-8")]
    BadEncoding,
}

/// All operations of both planes, indexed by method and segment count.
#[derive(Debug)]
pub struct Router {
    routes: HashMap<(String, usize), Vec<Route>>,
}

fn split(path: &str) -> Vec<&str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

impl Router {
    pub fn new(models: &'static Models) -> Router {
        let mut routes: HashMap<(String, usize), Vec<Route>> = HashMap::new();
        for (plane, model) in [(Plane::Control, &models.control), (Plane::Data, &models.data)] {
            for operation in model.operations.values() {
                let segments: Vec<Segment> = split(&operation.http.request_uri)
                    .into_iter()
                    .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(label) => Segment::Label(label.to_string()),
                        None => Segment::Literal(s.to_string()),
                    })
                    .collect();
                let literal_count = segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
                let key = (operation.http.method.clone(), segments.len());
                routes.entry(key).or_default().push(Route {
                    plane,
                    operation,
                    segments,
                    literal_count,
                });
            }
        }
        // The most specific template wins: `/memories/create` before `/memories/{memoryId}`.
        for candidates in routes.values_mut() {
            candidates.sort_by_key(|route| std::cmp::Reverse(route.literal_count));
        }
        Router { routes }
    }

    /// Finds the operation for `method` and the raw (percent-encoded) `path`.
    pub fn route(&self, method: &str, raw_path: &str) -> Result<RouteMatch, RouteError> {
        let parts = split(raw_path);
        if let Some(candidates) = self.routes.get(&(method.to_string(), parts.len())) {
            for route in candidates {
                if let Some(found) = Self::matches(route, &parts)? {
                    return Ok(found);
                }
            }
        }
        let other_method = self.routes.iter().any(|((m, n), candidates)| {
            m != method
                && *n == parts.len()
                && candidates
                    .iter()
                    .any(|r| matches!(Self::matches(r, &parts), Ok(Some(_))))
        });
        Err(if other_method {
            RouteError::MethodNotAllowed
        } else {
            RouteError::NotFound
        })
    }

    fn matches(route: &Route, parts: &[&str]) -> Result<Option<RouteMatch>, RouteError> {
        let mut labels = Vec::new();
        for (segment, part) in route.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return Ok(None),
                Segment::Label(name) => {
                    let decoded = percent_decode_str(part)
                        .decode_utf8()
                        .map_err(|_| RouteError::BadEncoding)?;
                    labels.push((name.clone(), decoded.into_owned()));
                }
            }
        }
        Ok(Some(RouteMatch {
            plane: route.plane,
            operation: route.operation,
            labels,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::models;

    fn router() -> Router {
        Router::new(models())
    }

    #[test]
    fn every_operation_routes_back_to_itself() {
        let router = router();
        for model in [&models().control, &models().data] {
            for op in model.operations.values() {
                let path: String = op
                    .http
                    .request_uri
                    .split('/')
                    .map(|s| if s.starts_with('{') { "x-AbCdEfGhIj" } else { s })
                    .collect::<Vec<_>>()
                    .join("/");
                let found = router.route(&op.http.method, &path).unwrap();
                assert_eq!(found.operation.name, op.name, "{} {path}", op.http.method);
            }
        }
    }

    #[test]
    fn labels_are_decoded_after_matching() {
        let found = router()
            .route(
                "POST",
                "/tags/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A123456789012%3Amemory%2Fm-AbCdEfGhIj",
            )
            .unwrap();
        assert_eq!(found.operation.name, "TagResource");
        assert_eq!(
            found.labels,
            vec![(
                "resourceArn".to_string(),
                "arn:aws:bedrock-agentcore:us-east-1:123456789012:memory/m-AbCdEfGhIj".to_string()
            )]
        );
    }

    #[test]
    fn trailing_slash_is_optional_and_literals_win() {
        let router = router();
        assert_eq!(
            router.route("POST", "/memories/").unwrap().operation.name,
            "ListMemories"
        );
        assert_eq!(
            router.route("POST", "/memories").unwrap().operation.name,
            "ListMemories"
        );
        assert_eq!(
            router.route("POST", "/memories/create").unwrap().operation.name,
            "CreateMemory"
        );
        assert_eq!(
            router
                .route("GET", "/memories/m-AbCdEfGhIj/details")
                .unwrap()
                .operation
                .name,
            "GetMemory"
        );
    }

    #[test]
    fn unknown_paths_and_methods_are_told_apart() {
        let router = router();
        assert_eq!(router.route("GET", "/nothing/here").unwrap_err(), RouteError::NotFound);
        assert_eq!(
            router.route("PATCH", "/memories/create").unwrap_err(),
            RouteError::MethodNotAllowed
        );
        assert_eq!(router.route("GET", "/tags/%FF").unwrap_err(), RouteError::BadEncoding);
    }
}
