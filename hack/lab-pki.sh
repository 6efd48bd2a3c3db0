# lab-pki.sh: the lab's certificates (sourced by lab-up.sh, needs lab-common.sh and openssl).
#
#   $ROOT/pki/ca-{cert,key}.pem           the lab CA
#   $ROOT/pki/ferry/{cacert,clientcert,clientkey}.pem
#                                         ferry's own client certificate (pkipath= in the inventory URIs)
#   host i, at /etc/pki in its mount namespace ($ROOT/hosts/hosti/pki):
#     CA/cacert.pem, libvirt/{server,client}cert.pem, libvirt/private/{server,client}key.pem
#                                         libvirtd's TLS listener, and its client certificate for
#                                         peer-to-peer migrations (libvirt's default paths)
#     qemu/{ca-cert,server-cert,server-key,client-cert,client-key}.pem
#                                         QEMU's migration TLS (qemu.conf migrate_tls_x509_cert_dir)
# Every certificate names its host by address and name (SAN), so TLS checks the peer it dialled.
# Re-runnable: what exists and is still valid for a day is kept.

PKI=$ROOT/pki
PKI_DAYS=${FERRY_LAB_PKI_DAYS:-365}

# pki_valid CERT: the certificate exists and is valid for at least a day more.
pki_valid() { [ -s "$1" ] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1; }

pki_ca() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  pki_valid "$PKI/ca-cert.pem" && [ -s "$PKI/ca-key.pem" ] && return 0
  say "making the lab CA in $PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$PKI_DAYS" -subj "/O=ferry lab/CN=ferry lab CA" \
    -keyout "$PKI/ca-key.pem" -out "$PKI/ca-cert.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" >/dev/null 2>&1 ||
    die "openssl could not make the lab CA"
  # a new CA makes every certificate it signed before useless
  rm -rf "$PKI/ferry" "$ROOT"/hosts/host*/pki
}

# pki_san_ok CERT SAN: the certificate names SAN's IP address (if it has one): a host that moved
# (FERRY_LAB_LINKS switched the lab between loopback and its own /24) needs a new certificate.
pki_san_ok() {
  local ip out
  ip=$(printf '%s\n' "$2" | tr ',' '\n' | sed -n 's/^IP://p')
  ip=${ip%%$'\n'*}
  [ -n "$ip" ] || return 0
  out=$(openssl x509 -in "$1" -noout -checkip "$ip" 2>/dev/null) || return 1
  case "$out" in *"does match"*) return 0 ;; *) return 1 ;; esac
}

# pki_cert KEY CERT CN EKU [SAN]: a key and a certificate signed by the lab CA.
pki_cert() {
  local key=$1 cert=$2 cn=$3 eku=$4 san=${5:-} ext
  pki_valid "$cert" && [ -s "$key" ] && openssl verify -CAfile "$PKI/ca-cert.pem" "$cert" >/dev/null 2>&1 &&
    pki_san_ok "$cert" "$san" && return 0
  mkdir -p "$(dirname "$key")" "$(dirname "$cert")"
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$ext"
  openssl req -new -newkey rsa:2048 -nodes -subj "/O=ferry lab/CN=$cn" -keyout "$key" -out "$cert.csr" >/dev/null 2>&1 &&
    openssl x509 -req -in "$cert.csr" -CA "$PKI/ca-cert.pem" -CAkey "$PKI/ca-key.pem" -CAcreateserial -sha256 \
      -days "$PKI_DAYS" -extfile "$ext" -out "$cert" >/dev/null 2>&1
  local rc=$?
  rm -f "$ext" "$cert.csr"
  [ $rc -eq 0 ] || die "openssl could not make $cert"
  chmod 600 "$key"
}

# pki_host i: host i's libvirt and QEMU certificates under its pki directory.
pki_host() {
  local i=$1 P addr san
  P=$(host_dir "$i")/pki
  addr=$(host_addr "$i")
  san="IP:$addr,DNS:host$i"
  mkdir -p "$P/CA" "$P/libvirt/private" "$P/qemu"
  cp "$PKI/ca-cert.pem" "$P/CA/cacert.pem"
  pki_cert "$P/libvirt/private/serverkey.pem" "$P/libvirt/servercert.pem" "host$i" serverAuth "$san"
  pki_cert "$P/libvirt/private/clientkey.pem" "$P/libvirt/clientcert.pem" "host$i" clientAuth "$san"
  # QEMU reads fixed names from one directory; the same keys serve it
  cp "$PKI/ca-cert.pem" "$P/qemu/ca-cert.pem"
  cp "$P/libvirt/servercert.pem" "$P/qemu/server-cert.pem"
  cp "$P/libvirt/private/serverkey.pem" "$P/qemu/server-key.pem"
  cp "$P/libvirt/clientcert.pem" "$P/qemu/client-cert.pem"
  cp "$P/libvirt/private/clientkey.pem" "$P/qemu/client-key.pem"
  chmod 600 "$P"/qemu/*-key.pem
}

# pki_ferry: ferry's client certificate, in the layout of libvirt's pkipath.
pki_ferry() {
  local F=$PKI/ferry
  mkdir -p "$F"
  cp "$PKI/ca-cert.pem" "$F/cacert.pem"
  pki_cert "$F/clientkey.pem" "$F/clientcert.pem" "ferry" clientAuth
}
