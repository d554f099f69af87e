#!/usr/bin/env bash
# Copies the browser tests' screenshots that docs/user-guide.md shows into
# docs/images/ (run scripts/test.sh first).
set -euo pipefail
cd "$(dirname "$0")/.."
s=target/screenshots
d=docs/images
mkdir -p "$d"
cp "$s/j2-conditions-01-home.png" "$d/home-nurse.png"
cp "$s/j1-repair-01-asset-qr-page.png" "$d/asset-qr-page.png"
cp "$s/j1-repair-02-report-with-photo.png" "$d/report-with-photo.png"
cp "$s/j3-errors-02-errors.png" "$d/form-errors.png"
cp "$s/j1-repair-03-reported.png" "$d/reported.png"
cp "$s/j1-repair-04-board.png" "$d/board.png"
cp "$s/j1-repair-05-dispatch-form.png" "$d/dispatch-form.png"
cp "$s/j1-repair-07-team-queue.png" "$d/team-queue.png"
cp "$s/j1-repair-10-requisition.png" "$d/requisition.png"
cp "$s/j1-repair-13-issued.png" "$d/issued.png"
cp "$s/j1-repair-14-complete-signed.png" "$d/complete-signed.png"
cp "$s/j1-repair-17-rating.png" "$d/rating.png"
cp "$s/j1-repair-18-closed.png" "$d/closed.png"
cp "$s/j5-admin-02-rejected.png" "$d/admin-rejected.png"
cp "$s/j6-repair-en-02-report-with-photo.png" "$d/report-with-photo-en.png"
cp "$s/j6-repair-en-18-closed.png" "$d/closed-en.png"
cp "$s/j7-dashboard-01-dashboard.png" "$d/dashboard.png"
cp "$s/j7-dashboard-02-report-table.png" "$d/report-table.png"
