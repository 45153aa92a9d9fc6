-- The night's findings, stored with their status relative to the previous published night.
-- Identity of a finding across nights: (category family, invoice key, field, source); the families
-- come from the model ($categories and $families, two lists of equal length: PENDING_SYNC and
-- MISSING_IN_REGISTRY are one family, so a pending invoice that outlives the grace period keeps the
-- night it was first seen).

-- name: macros
CREATE OR REPLACE TEMP MACRO fa_family(category, cats, fams) AS
    coalesce(fams[list_position(cats, category)], category);

-- Findings of the published night `prev_night` that are gone on `tonight`: resolved, or merely out of
-- the window (the invoice aged out of the snapshot; that is not a fix), or not checked (their issuing
-- system, `absent`, did not deliver tonight: allowed to be missing, never resolved).
CREATE OR REPLACE TEMP MACRO fa_gone(tonight, prev_night, first_day, cats, fams, absent) AS TABLE
SELECT p.* EXCLUDE (night) REPLACE (
           CASE WHEN list_contains(absent, p.source_system) THEN 'not_checked'
                WHEN p.issue_date < first_day THEN 'out_of_window' ELSE 'resolved' END AS finding_status,
           (tonight - p.first_seen)::INTEGER AS age_days)
FROM findings p
WHERE p.night = prev_night
  AND NOT EXISTS (
      SELECT 1 FROM findings c
      WHERE c.night = tonight
        AND fa_family(c.category, cats, fams) = fa_family(p.category, cats, fams)
        AND c.invoice_key IS NOT DISTINCT FROM p.invoice_key
        AND c.field IS NOT DISTINCT FROM p.field
        AND c.source_system IS NOT DISTINCT FROM p.source_system
  );

-- name: previous_night
SELECT max(night) FROM runs WHERE published AND night < $night;

-- name: absent_sources
-- Issuing systems of the previous published night that delivered nothing tonight.
SELECT coalesce(list(DISTINCT source_system ORDER BY source_system), [])::VARCHAR[] FROM ingested_files
WHERE night = $prev AND source_kind = 'issuer'
  AND source_system NOT IN (SELECT source_system FROM ingested_files WHERE night = $night);

-- name: delete_night
DELETE FROM findings WHERE night = $night;

-- name: insert_night
INSERT INTO findings BY NAME
SELECT
    $night AS night, f.*,
    CASE WHEN p.first_seen IS NULL THEN 'new' ELSE 'open' END AS finding_status,
    coalesce(p.first_seen, $night) AS first_seen,
    ($night - coalesce(p.first_seen, $night))::INTEGER AS age_days
FROM rc_all f
LEFT JOIN (
    SELECT fa_family(category, $categories, $families) AS family, invoice_key, field, source_system,
           min(first_seen) AS first_seen
    FROM findings WHERE night = $prev
    GROUP BY ALL
) p
  ON p.family = fa_family(f.category, $categories, $families)
 AND p.invoice_key IS NOT DISTINCT FROM f.invoice_key
 AND p.field IS NOT DISTINCT FROM f.field
 AND p.source_system IS NOT DISTINCT FROM f.source_system;

-- name: status_counts
SELECT count(*) FILTER (WHERE finding_status = 'new'), count(*) FILTER (WHERE finding_status = 'open')
FROM findings WHERE night = $night;

-- name: resolved
SELECT * FROM fa_gone($night, $prev, $window_start, $categories, $families, $absent)
ORDER BY list_position($categories, category), invoice_key, field, source_system;

-- name: resolved_counts
SELECT count(*) FILTER (WHERE finding_status = 'resolved'), count(*) FILTER (WHERE finding_status = 'out_of_window')
FROM fa_gone($night, $prev, $window_start, $categories, $families, $absent);

-- name: ordered
-- Publication order: category, then key, field, source and values, so reruns are byte-identical.
SELECT * EXCLUDE (night)
FROM findings
WHERE night = $night
ORDER BY list_position($categories, category), invoice_key, field, source_system,
         issuer_value NULLS FIRST, registry_value NULLS FIRST, detail;
