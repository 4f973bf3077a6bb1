<#
.SYNOPSIS
  ANY.RUN connector for Microsoft Sentinel: Live Response collection script for Windows endpoints
  (MDE RunScript, runs as SYSTEM). Windows PowerShell 5.1 compatible.

.DESCRIPTION
  Restores one detected (possibly quarantined) file into a private temporary folder, checks its
  hash, PUTs it to a blob-scoped SAS URL and prints exactly one result line as the LAST line:

    ANYRUN_COLLECT_RESULT <base64url(JSON)>   JSON = {"status":..., "sha256":..., "size":..., "detail":...}

  status / exit code: uploaded 0, error 1, bad_args 2, not_found 3, restore_failed 4,
  hash_mismatch 5, upload_failed 6, tool_missing 7.

  The only argument is the opaque envelope built by shared/src/live-response/args.ts:
    v1.<os>.<b64url(uploadUrl)>.<b64url(originalPath)>.<b64url(fileName)>.<sha256>.<sha1>.<md5>
  Nothing from it is evaluated (no Invoke-Expression), and neither the URL nor any part of its
  query is ever printed.

  Steps: copy the file if it still exists at its original path; otherwise add a temporary Defender
  exclusion for the private folder and run `MpCmdRun.exe -Restore -FilePath <original> -Path <folder>`
  (the item stays in quarantine). The exclusion and the folder are removed in `finally`.
#>
param(
  [Parameter(Position = 0)]
  [string]$Envelope = ''
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

$Marker = 'ANYRUN_COLLECT_RESULT'
$ExitCodes = @{
  'uploaded' = 0; 'error' = 1; 'bad_args' = 2; 'not_found' = 3; 'restore_failed' = 4
  'hash_mismatch' = 5; 'upload_failed' = 6; 'tool_missing' = 7
}
$StopSignal = 'anyrun-collect-stop'

$script:Status = $null
$script:Detail = ''
$script:Sha256 = $null
$script:Size = $null
$script:WorkDir = $null
$script:ExclusionAdded = $false

function Stop-Collect([string]$Status, [string]$Detail) {
  $script:Status = $Status
  $script:Detail = $Detail
  throw $StopSignal
}

function Write-Step([string]$Text) {
  Write-Output ('anyrun-collect: ' + $Text)
}

function ConvertTo-B64Url([string]$Text) {
  $b64 = [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes($Text))
  return $b64.TrimEnd('=').Replace('+', '-').Replace('/', '_')
}

function Format-ResultLine {
  $parts = New-Object System.Collections.Generic.List[string]
  $parts.Add('"status":"' + $script:Status + '"')
  if ($script:Sha256) { $parts.Add('"sha256":"' + $script:Sha256 + '"') }
  if ($null -ne $script:Size) { $parts.Add('"size":' + [string]$script:Size) }
  # detail is always one of this script's own fixed strings; keep it JSON-safe regardless.
  $detail = [regex]::Replace([string]$script:Detail, '[^A-Za-z0-9 _.:-]', '')
  if ($detail) { $parts.Add('"detail":"' + $detail + '"') }
  return $Marker + ' ' + (ConvertTo-B64Url ('{' + ($parts -join ',') + '}'))
}

function ConvertFrom-B64UrlField([string]$Field) {
  if ($Field -notmatch '^[A-Za-z0-9_-]+$') { return $null }
  $s = $Field.Replace('-', '+').Replace('_', '/')
  switch ($s.Length % 4) {
    0 { }
    2 { $s += '==' }
    3 { $s += '=' }
    default { return $null }
  }
  try {
    $bytes = [Convert]::FromBase64String($s)
    $strict = New-Object System.Text.UTF8Encoding($false, $true)
    $text = $strict.GetString($bytes)
  } catch {
    return $null
  }
  if ($text.Length -eq 0 -or $text.Contains([string][char]0)) { return $null }
  return $text
}

# Runs a native tool with its stderr merged into the returned lines. In Windows PowerShell 5.1,
# redirected stderr of a native command becomes an error record, which 'Stop' would turn into an
# exception: relax the preference for the call only. The exit code lands in $script:NativeExit.
$script:NativeExit = 0
function Invoke-Native([string]$Exe, [string[]]$Arguments) {
  $previous = $ErrorActionPreference
  $ErrorActionPreference = 'Continue'
  try {
    $lines = @(& $Exe @Arguments 2>&1 | ForEach-Object { [string]$_ })
    $script:NativeExit = $LASTEXITCODE
  } finally {
    $ErrorActionPreference = $previous
  }
  return $lines
}

function Get-HexHash([string]$Path, [string]$Algorithm) {
  return (Get-FileHash -LiteralPath $Path -Algorithm $Algorithm).Hash.ToLowerInvariant()
}

function Find-MpCmdRun {
  $platformRoot = Join-Path $env:ProgramData 'Microsoft\Windows Defender\Platform'
  if (Test-Path -LiteralPath $platformRoot) {
    $latest = Get-ChildItem -LiteralPath $platformRoot -Directory -ErrorAction SilentlyContinue |
      Sort-Object -Property @{ Expression = { try { [version]($_.Name -replace '-.*$', '') } catch { [version]'0.0' } } } -Descending |
      ForEach-Object { Join-Path $_.FullName 'MpCmdRun.exe' } |
      Where-Object { Test-Path -LiteralPath $_ -PathType Leaf } |
      Select-Object -First 1
    if ($latest) { return $latest }
  }
  $classic = Join-Path $env:ProgramFiles 'Windows Defender\MpCmdRun.exe'
  if (Test-Path -LiteralPath $classic -PathType Leaf) { return $classic }
  return $null
}

function New-PrivateFolder {
  $path = Join-Path ([IO.Path]::GetTempPath()) ('anyrun-collect.' + [guid]::NewGuid().ToString('N'))
  $null = New-Item -ItemType Directory -Path $path
  # Only SYSTEM and Administrators, no inheritance.
  $acl = New-Object System.Security.AccessControl.DirectorySecurity
  $acl.SetAccessRuleProtection($true, $false)
  foreach ($sid in @('S-1-5-18', 'S-1-5-32-544')) {
    $identity = New-Object System.Security.Principal.SecurityIdentifier($sid)
    $rule = New-Object System.Security.AccessControl.FileSystemAccessRule($identity, 'FullControl', 'ContainerInherit,ObjectInherit', 'None', 'Allow')
    $acl.AddAccessRule($rule)
  }
  Set-Acl -LiteralPath $path -AclObject $acl
  return $path
}

function Add-TemporaryExclusion([string]$Folder) {
  try {
    Add-MpPreference -ExclusionPath $Folder
    $script:ExclusionAdded = $true
  } catch {
    Write-Step 'exclusion could not be added'
    return
  }
  # The exclusion can take a moment to apply.
  for ($i = 0; $i -lt 10; $i++) {
    try {
      $current = (Get-MpPreference).ExclusionPath
      if ($current -and ($current -contains $Folder)) { return }
    } catch { }
    Start-Sleep -Seconds 3
  }
}

$script:Expected = $null
$script:MismatchSha256 = $null
$script:SawMismatch = $false
$script:SawCandidate = $false

# Returns $true when $File is a regular file whose hash matches (or no hash was given).
function Test-Candidate([string]$File) {
  if (-not (Test-Path -LiteralPath $File -PathType Leaf)) { return $false }
  $item = Get-Item -LiteralPath $File -Force
  if ($item.Attributes -band [IO.FileAttributes]::ReparsePoint) { return $false }
  $script:SawCandidate = $true
  if ($script:Expected) {
    $actual = Get-HexHash $File $script:Expected.Algorithm
    if ($actual -ne $script:Expected.Value) {
      $script:SawMismatch = $true
      $script:MismatchSha256 = Get-HexHash $File 'SHA256'
      return $false
    }
  }
  return $true
}

function Invoke-Collect {
  if ($Envelope -notmatch '^[A-Za-z0-9._-]+$') { Stop-Collect 'bad_args' 'envelope charset' }
  $fields = $Envelope.Split('.')
  if ($fields.Length -ne 8) { Stop-Collect 'bad_args' 'envelope field count' }
  if ($fields[0] -cne 'v1') { Stop-Collect 'bad_args' 'envelope version' }
  if ($fields[1] -cne 'windows') { Stop-Collect 'bad_args' 'envelope os' }
  $uploadUrl = ConvertFrom-B64UrlField $fields[2]
  if (-not $uploadUrl) { Stop-Collect 'bad_args' 'upload url encoding' }
  $originalPath = ConvertFrom-B64UrlField $fields[3]
  if (-not $originalPath) { Stop-Collect 'bad_args' 'original path encoding' }
  $fileName = ConvertFrom-B64UrlField $fields[4]
  if (-not $fileName) { Stop-Collect 'bad_args' 'file name encoding' }
  if ($fields[5] -cnotmatch '^([0-9a-f]{64})?$') { Stop-Collect 'bad_args' 'sha256 format' }
  if ($fields[6] -cnotmatch '^([0-9a-f]{40})?$') { Stop-Collect 'bad_args' 'sha1 format' }
  if ($fields[7] -cnotmatch '^([0-9a-f]{32})?$') { Stop-Collect 'bad_args' 'md5 format' }
  # Printable ASCII without space, quote or backslash; http(s) only.
  if ($uploadUrl -cnotmatch '^https?://[\x21\x23-\x5B\x5D-\x7E]+$') { Stop-Collect 'bad_args' 'upload url characters' }
  # A local drive path only: never a UNC or device path (SYSTEM would reach out to a host the incident names).
  if ($originalPath -notmatch '^[A-Za-z]:\\' -or $originalPath.Contains('"')) { Stop-Collect 'bad_args' 'original path not a local drive path' }
  if (@($originalPath -split '[\\/]' | Where-Object { $_ -eq '..' -or $_ -eq '.' }).Count -gt 0) { Stop-Collect 'bad_args' 'original path has dot segments' }
  if ($fileName.IndexOfAny([char[]]@('\', '/')) -ge 0) { Stop-Collect 'bad_args' 'file name has a slash' }

  if ($fields[5]) { $script:Expected = @{ Algorithm = 'SHA256'; Value = $fields[5] } }
  elseif ($fields[6]) { $script:Expected = @{ Algorithm = 'SHA1'; Value = $fields[6] } }
  elseif ($fields[7]) { $script:Expected = @{ Algorithm = 'MD5'; Value = $fields[7] } }

  $script:WorkDir = New-PrivateFolder
  $restoreDir = Join-Path $script:WorkDir 'restore'
  $null = New-Item -ItemType Directory -Path $restoreDir
  $chosen = $null

  if (Test-Path -LiteralPath $originalPath -PathType Leaf) {
    Write-Step 'file present at its original path'
    $copy = Join-Path $script:WorkDir 'original.bin'
    Copy-Item -LiteralPath $originalPath -Destination $copy -Force
    if (Test-Candidate $copy) { $chosen = $copy }
  }

  $foundInQuarantine = $false
  if (-not $chosen) {
    $mp = Find-MpCmdRun
    if (-not $mp) {
      if ($script:SawMismatch) { Stop-Collect 'hash_mismatch' 'hash differs and MpCmdRun not found' }
      Stop-Collect 'tool_missing' 'MpCmdRun not found'
    }
    Add-TemporaryExclusion $restoreDir
    $null = Invoke-Native $mp @('-Restore', '-FilePath', $originalPath, '-Path', $restoreDir)
    $restoreExit = $script:NativeExit
    $restored = @(Get-ChildItem -LiteralPath $restoreDir -Recurse -File -Force -ErrorAction SilentlyContinue)
    if ($restoreExit -eq 0 -or $restored.Count -gt 0) {
      $foundInQuarantine = $true
      Write-Step 'restored by path'
    }
    if ($script:Expected) {
      foreach ($f in $restored) { if (Test-Candidate $f.FullName) { $chosen = $f.FullName; break } }
    } else {
      $named = @($restored | Where-Object { $_.Name -eq $fileName })
      if ($named.Count -ge 1) { $pick = $named[0] } elseif ($restored.Count -eq 1) { $pick = $restored[0] } else { $pick = $null }
      if ($pick -and (Test-Candidate $pick.FullName)) { $chosen = $pick.FullName }
    }
    if (-not $chosen -and -not $foundInQuarantine) {
      # Tell "not quarantined" from "restore failed": compare the listed items as text only.
      $listing = Invoke-Native $mp @('-Restore', '-ListAll')
      foreach ($line in $listing) {
        if ($line.IndexOf($originalPath, [StringComparison]::OrdinalIgnoreCase) -ge 0) { $foundInQuarantine = $true; break }
      }
    }
  }

  if (-not $chosen) {
    if ($script:SawMismatch) {
      $script:Sha256 = $script:MismatchSha256
      Stop-Collect 'hash_mismatch' ($script:Expected.Algorithm.ToLowerInvariant() + ' differs')
    }
    if ($foundInQuarantine -or $script:SawCandidate) { Stop-Collect 'restore_failed' 'restore produced no usable file' }
    Stop-Collect 'not_found' 'not at original path and not in quarantine'
  }

  $script:Sha256 = Get-HexHash $chosen 'SHA256'
  $script:Size = (Get-Item -LiteralPath $chosen -Force).Length

  Write-Step 'uploading'
  [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12
  [Net.ServicePointManager]::Expect100Continue = $false
  $headers = @{ 'x-ms-blob-type' = 'BlockBlob'; 'x-ms-version' = '2021-04-10' }
  try {
    $response = Invoke-WebRequest -Uri $uploadUrl -Method Put -InFile $chosen -Headers $headers `
      -ContentType 'application/octet-stream' -UseBasicParsing -TimeoutSec 420 -MaximumRedirection 0
    $code = [int]$response.StatusCode
  } catch {
    # Never print the exception: keep every trace of the URL out of the output.
    $code = 0
    try { $code = [int]$_.Exception.Response.StatusCode } catch { $code = 0 }
    Stop-Collect 'upload_failed' ('http ' + [string]$code)
  }
  if ($code -lt 200 -or $code -gt 299) { Stop-Collect 'upload_failed' ('http ' + [string]$code) }
  $script:Status = 'uploaded'
  $script:Detail = ''
}

try {
  Invoke-Collect
} catch {
  if (-not $script:Status -or [string]$_.Exception.Message -ne $StopSignal) {
    $script:Status = 'error'
    $script:Detail = 'unexpected failure'
    $script:Sha256 = $null
    $script:Size = $null
  }
} finally {
  if ($script:ExclusionAdded -and $script:WorkDir) {
    try { Remove-MpPreference -ExclusionPath (Join-Path $script:WorkDir 'restore') } catch { }
  }
  if ($script:WorkDir -and (Test-Path -LiteralPath $script:WorkDir)) {
    try { Remove-Item -LiteralPath $script:WorkDir -Recurse -Force } catch { }
  }
}

if ($script:Status -ne 'uploaded') { $script:Size = $null; if ($script:Status -ne 'hash_mismatch') { $script:Sha256 = $null } }
Write-Output (Format-ResultLine)
exit $ExitCodes[$script:Status]
