-- The night's findings, stored with their status relative to the previous published night.
-- Identity of a finding across nights: (category family, invoice key, field, source); PENDING_SYNC
-- and MISSING_IN_REGISTRY are one family, so a pending invoice that outlives the grace period keeps
-- the night it was first seen.

-- name: previous_night
SELECT max(night) FROM runs WHERE published AND night < $night;

-- name: delete_night
DELETE FROM findings WHERE night = $night;

-- name: insert_night
INSERT INTO findings
SELECT
    $night, f.category, f.invoice_key, f.invoice_code, f.invoice_number, f.field, f.source_system,
    f.issuer_value, f.registry_value, f.seller_tax_id, f.issue_date, f.detail, f.suggested_match,
    CASE WHEN p.first_seen IS NULL THEN 'new' ELSE 'open' END,
    coalesce(p.first_seen, $night),
    ($night - coalesce(p.first_seen, $night))::INTEGER
FROM rc_all f
LEFT JOIN (
    SELECT CASE category WHEN 'PENDING_SYNC' THEN 'MISSING_IN_REGISTRY' ELSE category END AS family,
           invoice_key, field, source_system, min(first_seen) AS first_seen
    FROM findings WHERE night = $prev
    GROUP BY ALL
) p
  ON p.family = CASE f.category WHEN 'PENDING_SYNC' THEN 'MISSING_IN_REGISTRY' ELSE f.category END
 AND p.invoice_key IS NOT DISTINCT FROM f.invoice_key
 AND p.field IS NOT DISTINCT FROM f.field
 AND p.source_system IS NOT DISTINCT FROM f.source_system;

-- name: status_counts
SELECT count(*) FILTER (WHERE finding_status = 'new'), count(*) FILTER (WHERE finding_status = 'open')
FROM findings WHERE night = $night;

-- name: resolved
-- Findings of the previous published night that are gone tonight: resolved, or merely out of the
-- window (the invoice aged out of the snapshot; that is not a fix).
SELECT p.category, p.invoice_key, p.invoice_code, p.invoice_number, p.field, p.source_system,
       p.issuer_value, p.registry_value, p.seller_tax_id, p.issue_date, p.detail, p.suggested_match,
       CASE WHEN p.issue_date < $window_start THEN 'out_of_window' ELSE 'resolved' END AS finding_status,
       p.first_seen, ($night - p.first_seen)::INTEGER AS age_days
FROM findings p
WHERE p.night = $prev
  AND NOT EXISTS (
      SELECT 1 FROM findings c
      WHERE c.night = $night
        AND CASE c.category WHEN 'PENDING_SYNC' THEN 'MISSING_IN_REGISTRY' ELSE c.category END
          = CASE p.category WHEN 'PENDING_SYNC' THEN 'MISSING_IN_REGISTRY' ELSE p.category END
        AND c.invoice_key IS NOT DISTINCT FROM p.invoice_key
        AND c.field IS NOT DISTINCT FROM p.field
        AND c.source_system IS NOT DISTINCT FROM p.source_system
  )
ORDER BY list_position($categories, p.category), p.invoice_key, p.field, p.source_system;

-- name: resolved_counts
SELECT count(*) FILTER (WHERE finding_status = 'resolved'), count(*) FILTER (WHERE finding_status = 'out_of_window')
FROM (
    SELECT CASE WHEN p.issue_date < $window_start THEN 'out_of_window' ELSE 'resolved' END AS finding_status
    FROM findings p
    WHERE p.night = $prev
      AND NOT EXISTS (
          SELECT 1 FROM findings c
          WHERE c.night = $night
            AND CASE c.category WHEN 'PENDING_SYNC' THEN 'MISSING_IN_REGISTRY' ELSE c.category END
              = CASE p.category WHEN 'PENDING_SYNC' THEN 'MISSING_IN_REGISTRY' ELSE p.category END
            AND c.invoice_key IS NOT DISTINCT FROM p.invoice_key
            AND c.field IS NOT DISTINCT FROM p.field
            AND c.source_system IS NOT DISTINCT FROM p.source_system
      )
);

-- name: ordered
-- Publication order: category, then key, field, source and values, so reruns are byte-identical.
SELECT category, invoice_code, invoice_number, field, source_system, issuer_value, registry_value,
       seller_tax_id, issue_date, detail, suggested_match, finding_status, first_seen, age_days, invoice_key
FROM findings
WHERE night = $night
ORDER BY list_position($categories, category), invoice_key, field, source_system,
         issuer_value NULLS FIRST, registry_value NULLS FIRST, detail;
