-- The night's findings, stored with their status relative to the previous published night.
-- Identity of a finding across nights: (category family, invoice key, field, source); the families
-- come from the model ($categories and $families, two lists of equal length: PENDING_SYNC and
-- MISSING_IN_REGISTRY are one family, so a pending invoice that outlives the grace period keeps the
-- night it was first seen).

-- name: macros
CREATE OR REPLACE TEMP MACRO fa_family(category, cats, fams) AS
    coalesce(fams[list_position(cats, category)], category);

-- A finding's identity across nights, as a short id finance can quote (编号).
CREATE OR REPLACE TEMP MACRO fa_finding_id(family, invoice_key, field, source_system) AS
    'F' || upper(substr(md5(concat_ws(chr(31), family, coalesce(invoice_key, ''), coalesce(field, ''),
                                      coalesce(source_system, ''))), 1, 12));

-- The values a decision is taken on: other values tonight re-open it.
CREATE OR REPLACE TEMP MACRO fa_values_hash(category, issuer_value, registry_value, issuer_total, registry_total) AS
    md5(concat_ws(chr(31), category, coalesce(issuer_value, ''), coalesce(registry_value, ''),
                  coalesce(CAST(issuer_total AS VARCHAR), ''), coalesce(CAST(registry_total AS VARCHAR), '')));

-- The open items of a published night: its findings and the items it carried.
CREATE OR REPLACE TEMP MACRO fa_items(n) AS TABLE
SELECT f.*, NULL::VARCHAR AS carried_as, f.night AS last_found FROM findings f WHERE f.night = n
UNION ALL BY NAME
SELECT c.* FROM carried_findings c WHERE c.night = n;

-- Every finding and carried item published before night n (what a decision file may name).
CREATE OR REPLACE TEMP MACRO fa_items_upto(n) AS TABLE
SELECT f.* FROM findings f WHERE f.night < n
UNION ALL BY NAME
SELECT c.* EXCLUDE (carried_as, last_found) FROM carried_findings c WHERE c.night < n;

-- The decision in force on a night for each finding: the latest read on or before it.
CREATE OR REPLACE TEMP MACRO fa_decisions(n) AS TABLE
SELECT finding_id, arg_max(decision, (read_night, file, row_number)) AS decision,
       arg_max(note, (read_night, file, row_number)) AS note,
       arg_max(decided_by, (read_night, file, row_number)) AS decided_by,
       max(read_night) AS decided_on,
       arg_max(values_hash, (read_night, file, row_number)) AS values_hash
FROM decisions WHERE read_night <= n GROUP BY finding_id;

-- Open items of the published night `prev_night` that are gone on `tonight`: resolved, or merely out of
-- the window (the invoice aged out of the snapshot; that is not a fix: the item is carried as
-- left_window), or not checked (their issuing system, `absent`, did not deliver tonight: allowed to be
-- missing, never resolved). An item carried before stays carried while its invoice is out of the window.
CREATE OR REPLACE TEMP MACRO fa_gone(tonight, prev_night, first_day, cats, fams, absent) AS TABLE
SELECT p.* EXCLUDE (night) REPLACE (
           CASE WHEN list_contains(absent, p.source_system) THEN 'not_checked'
                WHEN p.issue_date < first_day THEN 'out_of_window' ELSE 'resolved' END AS finding_status,
           (tonight - p.first_seen)::INTEGER AS age_days)
FROM fa_items(prev_night) p
WHERE NOT EXISTS (
      SELECT 1 FROM findings c
      WHERE c.night = tonight
        AND fa_family(c.category, cats, fams) = fa_family(p.category, cats, fams)
        AND c.invoice_key IS NOT DISTINCT FROM p.invoice_key
        AND c.field IS NOT DISTINCT FROM p.field
        AND c.source_system IS NOT DISTINCT FROM p.source_system
  );

-- Gone items with tonight's decision: closed when finance's decision closes it (closing) on the values
-- it was taken on.
CREATE OR REPLACE TEMP MACRO fa_gone_decided(tonight, prev_night, first_day, cats, fams, absent, closing) AS TABLE
SELECT g.* REPLACE (
           coalesce(CASE WHEN d.values_hash IS DISTINCT FROM fa_values_hash(g.category, g.issuer_value,
                             g.registry_value, g.issuer_total, g.registry_total) AND d.decision IS NOT NULL
                         THEN 'reopened' ELSE d.decision END, g.decision) AS decision,
           coalesce(d.note, g.decision_note) AS decision_note,
           coalesce(d.decided_by, g.decided_by) AS decided_by,
           coalesce(d.decided_on, g.decided_on) AS decided_on),
       d.decision IS NOT NULL AND list_contains(closing, d.decision)
           AND d.values_hash = fa_values_hash(g.category, g.issuer_value, g.registry_value, g.issuer_total,
                                              g.registry_total) AS closed
FROM fa_gone(tonight, prev_night, first_day, cats, fams, absent) g
LEFT JOIN fa_decisions(tonight) d USING (finding_id);

-- name: previous_night
SELECT max(night) FROM runs WHERE published AND night < $night;

-- name: absent_sources
-- Issuing systems that delivered nothing tonight although the previous published night had them (or
-- still carried their items as not checked).
SELECT coalesce(list(DISTINCT s ORDER BY s), [])::VARCHAR[] FROM (
    SELECT source_system AS s FROM ingested_files WHERE night = $prev AND source_kind = 'issuer'
    UNION ALL
    SELECT source_system FROM carried_findings WHERE night = $prev AND carried_as = 'not_checked'
)
WHERE s NOT IN (SELECT source_system FROM ingested_files WHERE night = $night);

-- name: delete_night
DELETE FROM findings WHERE night = $night;

-- name: insert_night
INSERT INTO findings BY NAME
SELECT
    $night AS night, f.*,
    CASE WHEN p.first_seen IS NULL THEN 'new' ELSE 'open' END AS finding_status,
    coalesce(p.first_seen, $night) AS first_seen,
    ($night - coalesce(p.first_seen, $night))::INTEGER AS age_days,
    fa_finding_id(fa_family(f.category, $categories, $families), f.invoice_key, f.field, f.source_system)
        AS finding_id,
    coalesce(a.action, b.action) AS action,
    coalesce(a.role, b.role) AS owner_role
FROM (
    -- The detail in Chinese, then in English.
    SELECT r.* REPLACE (
        CASE WHEN t.template IS NULL THEN r.detail ELSE
            replace(replace(replace(replace(t.template, '{source}', coalesce(r.source_system, '—')),
                                    '{field}', coalesce(l.label, r.field, '—')),
                            '{issuer}', coalesce(r.issuer_value, '—')),
                    '{registry}', coalesce(r.registry_value, '—'))
            || ' / ' || coalesce(r.detail, '') END AS detail)
    FROM rc_all r
    LEFT JOIN fa_detail_zh t ON t.category = r.category AND t.field IS NULL
    LEFT JOIN fa_field_labels l ON l.field = r.field
) f
LEFT JOIN (
    SELECT fa_family(category, $categories, $families) AS family, invoice_key, field, source_system,
           min(first_seen) AS first_seen
    FROM fa_items($prev)
    GROUP BY ALL
) p
  ON p.family = fa_family(f.category, $categories, $families)
 AND p.invoice_key IS NOT DISTINCT FROM f.invoice_key
 AND p.field IS NOT DISTINCT FROM f.field
 AND p.source_system IS NOT DISTINCT FROM f.source_system
LEFT JOIN fa_actions a ON a.category = f.category AND a.field = f.field
LEFT JOIN fa_actions b ON b.category = f.category AND b.field IS NULL;

-- name: apply_decisions
-- Tonight's findings with the decision in force; one whose values changed since is re-opened.
UPDATE findings f
SET decision = CASE WHEN d.values_hash IS DISTINCT FROM fa_values_hash(f.category, f.issuer_value,
                            f.registry_value, f.issuer_total, f.registry_total) THEN 'reopened'
                    ELSE d.decision END,
    decision_note = d.note, decided_by = d.decided_by, decided_on = d.decided_on
FROM fa_decisions($night) d
WHERE f.night = $night AND f.finding_id = d.finding_id;

-- name: delete_carried
DELETE FROM carried_nights WHERE night = $night;

-- name: carried_tonight
-- Items gone tonight that are not fixed: left the window, or not checked; unless finance closed them.
-- (carried.store files them.)
CREATE OR REPLACE TEMP TABLE fa_carried AS
SELECT $night AS night, * EXCLUDE (closed, finding_status, carried_as),
       CASE finding_status WHEN 'out_of_window' THEN 'left_window' ELSE finding_status END AS finding_status,
       CASE finding_status WHEN 'out_of_window' THEN 'left_window' ELSE finding_status END AS carried_as
FROM fa_gone_decided($night, $prev, $window_start, $categories, $families, $absent, $closing)
WHERE finding_status IN ('out_of_window', 'not_checked') AND NOT closed;

-- name: status_counts
SELECT count(*) FILTER (WHERE finding_status = 'new'), count(*) FILTER (WHERE finding_status = 'open')
FROM findings WHERE night = $night;

-- name: resolved
-- What is no longer open tonight: found fixed inside the window, or closed by finance's decision.
SELECT * EXCLUDE (closed, carried_as, last_found)
    REPLACE (CASE WHEN finding_status = 'resolved' THEN 'resolved' ELSE 'closed' END AS finding_status)
FROM fa_gone_decided($night, $prev, $window_start, $categories, $families, $absent, $closing)
WHERE finding_status = 'resolved' OR closed
ORDER BY list_position($categories, category), invoice_key, field, source_system;

-- name: resolved_counts
SELECT count(*) FILTER (WHERE finding_status = 'resolved'),
       (SELECT count(*) FROM carried_findings WHERE night = $night AND carried_as = 'left_window')
FROM fa_gone_decided($night, $prev, $window_start, $categories, $families, $absent, $closing)
WHERE finding_status = 'resolved' OR closed;

-- name: carried
-- The open items carried tonight, in publication order.
SELECT * EXCLUDE (night)
FROM carried_findings
WHERE night = $night
ORDER BY list_position($categories, category), invoice_key, field, source_system,
         issuer_value NULLS FIRST, registry_value NULLS FIRST, detail;

-- name: ordered
-- Publication order: category, then key, field, source and values, so reruns are byte-identical.
SELECT * EXCLUDE (night)
FROM findings
WHERE night = $night
ORDER BY list_position($categories, category), invoice_key, field, source_system,
         issuer_value NULLS FIRST, registry_value NULLS FIRST, detail;
